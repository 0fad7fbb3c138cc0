"""`demo`: the emulator and the proxy on loopback, with curl commands that work."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from ..config import load_settings

#: A V1 Sampler submission as qiskit-ibm-runtime 0.20.0 sends it: a Bell circuit (QPY of qiskit
#: 0.46.3, from tests/data/trace-qiskit-ibm-runtime-0.20.0-v1.jsonl), 1000 shots, no `version`.
V1_BELL_CIRCUIT = (
    "eJwL9Az29gzhYtBjZoAAxtRCBpY0Bg4gkwmKGdDYLEmpOTlQNkN1bSEjWI6RsZABFTAmw2SS0WXgLFYMEVTg4Z5YkgoxmA3J"
    "KVjMY3SOgKstBIuxI8tiMds3NbG4tAiiA+JCEnSA/QRS8x8JwNQBAJm0IE4="
)
V1_SAMPLER_JOB: dict[str, Any] = {
    "program_id": "sampler",
    "backend": "fake_manila",
    "hub": "ibm-q",
    "group": "open",
    "project": "main",
    "params": {
        "circuits": [{"__type__": "QuantumCircuit", "__value__": V1_BELL_CIRCUIT}],
        "parameters": [[]],
        "parameter_values": [[]],
        "run_options": {"shots": 1000},
    },
}


def v1_example(base: str, emulator: Any) -> str:
    """Run one V1 Sampler job through the proxy and say what the new API got and what came back."""
    try:
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as c:
            r = c.post("/runtime/jobs", json=V1_SAMPLER_JOB)
            r.raise_for_status()
            job_id = r.json()["id"]
            for _ in range(10):  # the emulator finishes a job on its second poll
                if c.get(f"/runtime/jobs/{job_id}").json().get("status") not in ("Queued", "Running"):
                    break
            result = c.get(f"/runtime/jobs/{job_id}/results").json()
        sent = emulator.find_requests("POST", "/api/v1/jobs")[-1]["body"]
        quasi = [{k: round(v, 3) for k, v in q.items()} for q in result["quasi_dists"]]
        return (
            f"V1 call translated: Sampler V1 job {job_id} ran upstream as program {sent['program_id']!r} "
            f"version {sent['params'].get('version')} with {len(sent['params'].get('pubs', []))} pub(s); "
            f"the caller got quasi_dists={json.dumps(quasi)}"
        )
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return f"V1 call translated: the example job did not complete ({type(exc).__name__}: {exc})"


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + proxy on loopback, with curl commands that work. No IBM account needed."""
    from ..app import create_app
    from ..emulator import DEMO_API_KEY, DEMO_CRN, EmulatorConfig, create_emulator_app
    from ..logs import configure
    from ..serving import BackgroundServer
    from ..wire import server_options

    emulator_app = create_emulator_app(EmulatorConfig())
    try:
        emulator = BackgroundServer(emulator_app, port=args.emulator_port or None).start()
    except (RuntimeError, TimeoutError, OSError):
        print(f"qiskit-classic-proxy: cannot start the emulator on port {args.emulator_port}", file=sys.stderr)
        return 1
    settings = load_settings(
        None,
        api_key=DEMO_API_KEY,
        service_crn=DEMO_CRN,
        upstream_url=emulator.url + "/api",
        iam_url=emulator.url + "/identity/token",
        host="127.0.0.1",
        port=args.port,
        usage_db="",
        intercept_port=getattr(args, "intercept_port", None),
    )
    configure("info", "text")
    try:
        app = create_app(settings)
        proxy = BackgroundServer(
            app, port=args.port, access_log=False, server_header=False, **server_options(settings)
        ).start()
    except (RuntimeError, TimeoutError, OSError):
        emulator.stop()
        print(f"qiskit-classic-proxy: cannot listen on 127.0.0.1:{args.port} (in use?); try --port", file=sys.stderr)
        return 1
    base = proxy.url
    v1_line = v1_example(base, emulator_app.state.emulator)
    intercept = app.intercept
    zero = (
        f"\nZero-change mode (no url= at all), in the shell that runs the legacy code:\n"
        f"  export HTTPS_PROXY=http://127.0.0.1:{intercept.port} REQUESTS_CA_BUNDLE={intercept.ca.cert_path}\n"
        if intercept is not None else ""
    )
    print(f"""
qiskit-classic-proxy demo
  proxy:    {base}   (Classic API: {base}/runtime/..., {base}/api/...)
  emulator: {emulator.url}   (a fake of the new API at /api/v1 and of IAM, for this demo)

Try it (another terminal):
  curl -s {base}/runtime/backends
  curl -s {base}/runtime/backends/fake_manila/status
  curl -s -X POST {base}/runtime/jobs \\
       -d '{{"program_id":"sampler","backend":"fake_manila","hub":"ibm-q","group":"open","project":"main",
             "params":{{"pubs":[],"version":2}}}}'
  curl -s '{base}/runtime/jobs?limit=5&provider=ibm-q/open/main'
  curl -s -i {base}/runtime/health          # 410 Gone: removed from the new API
  curl -s {emulator.url}/__emulator__/requests   # what reached the "new API"

{v1_line}

Legacy SDKs: QiskitRuntimeService(channel="ibm_quantum", url="{base}/api", token="anything")
{zero}Ctrl-C to stop.""", flush=True)
    try:
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        emulator.stop()
    return 0
