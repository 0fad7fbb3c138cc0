"""`demo`: the emulator and the proxy on loopback, with curl commands that work.

The proxy runs with the same settings as `serve` (config file, QCP_* env, flags: host, logs, route
policies, client tokens...); only what points it at the emulator is replaced (the new API and IAM
URLs, the API key, the CRN). Its usage record goes to a temp file the banner names, kept after the
demo stops, so the `report` command it prints works afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from ..config import Settings
from .flags import load
from .preflight import EXIT_LISTEN, ensure_ca, listen_problem

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


def v1_example(base: str, emulator: Any, headers: dict[str, str] | None = None) -> str:
    """Run one V1 Sampler job through the proxy and say what the new API got and what came back."""
    try:
        # The demo's own proxy, on loopback: its certificate (if ssl_certfile is set) need not be trusted here.
        with httpx.Client(base_url=base, timeout=10, trust_env=False, headers=headers, verify=False) as c:
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


def pointed_at_emulator(user: Settings, emulator_url: str, usage_db: str) -> Settings:
    """The user's settings (loaded as `serve` loads them), with the new API and IAM the emulator's."""
    from ..emulator import DEMO_API_KEY, DEMO_CRN

    return user.model_copy(update={
        "api_key": SecretStr(DEMO_API_KEY),
        "service_crn": DEMO_CRN,
        "upstream_url": emulator_url + "/api",
        "iam_url": emulator_url + "/identity/token",
        "usage_db": usage_db,
    })


def report_command(usage_db: str, config: str | None) -> str:
    """A `report` command to paste into this shell: the same executable, the record just written."""
    from ..store import is_postgres

    exe = sys.argv[0] if os.path.basename(sys.argv[0]) == "qiskit-classic-proxy" else ""
    if not exe:
        prog = f"{shlex.quote(sys.executable)} -m proxy"
    elif shutil.which("qiskit-classic-proxy") and os.path.samefile(shutil.which("qiskit-classic-proxy") or "", exe):
        prog = "qiskit-classic-proxy"
    else:
        rel = os.path.relpath(exe)
        prog = shlex.quote(rel if not rel.startswith("..") else os.path.abspath(exe))
    if is_postgres(usage_db):  # never print its password: the same settings name it
        return f"{prog} report" + (f" --config {shlex.quote(config)}" if config else "")
    return f"{prog} report --db {shlex.quote(usage_db)}"


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (kill, docker stop) stops the demo like Ctrl-C: the usage record is written out."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (a test calling cmd_demo): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _url_host(host: str) -> str:
    """Where a curl on this machine reaches a server bound to `host` (a wildcard: loopback)."""
    reach = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{reach}]" if ":" in reach else reach


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + proxy on loopback, with curl commands that work. No IBM account needed."""
    from ..app import create_app
    from ..emulator import EmulatorConfig, create_emulator_app
    from ..logs import configure
    from ..serving import BackgroundServer, free_port, listen_error
    from ..store import is_postgres
    from ..wire import server_options

    # The user's settings first: a configuration error is one line (exit 2), before anything starts.
    user = load(args)
    emulator_port = getattr(args, "emulator_port", None) or 0
    problem = listen_problem(user) or listen_error("127.0.0.1", emulator_port, "--emulator-port")
    if problem:
        print(f"qiskit-classic-proxy: {problem}", file=sys.stderr)
        return EXIT_LISTEN
    if user.intercept_port is not None:
        ensure_ca(user.ca_dir)
    configure(user.log_level, user.log_format)

    usage_db, record_dir = user.usage_db, None
    if "usage_db" not in user.model_fields_set:  # not chosen by the user: a fresh record of this demo
        record_dir = tempfile.mkdtemp(prefix="qcp-demo-")
        usage_db = os.path.join(record_dir, "usage.sqlite3")
    elif usage_db and not is_postgres(usage_db):  # a path: the report command works from any folder
        usage_db = os.path.abspath(usage_db)

    if not emulator_port:  # any free port, but not one the proxy is about to take
        taken = {user.port, user.admin_port, user.intercept_port}
        emulator_port = free_port()
        while emulator_port in taken:
            emulator_port = free_port()
    emulator_app = create_emulator_app(EmulatorConfig())
    try:
        emulator = BackgroundServer(emulator_app, port=emulator_port, log_config=None).start()
    except (RuntimeError, TimeoutError, OSError):
        print(f"qiskit-classic-proxy: cannot start the emulator on port {emulator_port}", file=sys.stderr)
        return 1
    settings = pointed_at_emulator(user, emulator.url, usage_db)
    started: list[Any] = [emulator]
    scheme = "https" if settings.ssl_certfile else "http"
    base = f"{scheme}://{_url_host(settings.host)}:{settings.port}"
    admin_line = ""
    try:
        app = create_app(settings)
        proxy = BackgroundServer(
            app, host=settings.host, port=settings.port, access_log=False, server_header=False, log_config=None,
            ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile, timeout_graceful_shutdown=5,
            **server_options(settings),
        ).start()
        started.append(proxy)
        base = f"{scheme}://{_url_host(settings.host)}:{proxy.port}"
        if settings.admin_port is not None:
            admin_host = settings.admin_host or settings.host
            admin = BackgroundServer(
                app.admin_app, host=admin_host, port=settings.admin_port or None, lifespan="off",
                interface="asgi3", access_log=False, server_header=False, log_config=None,
            ).start()
            started.append(admin)
            admin_line = f"  admin:    http://{_url_host(admin_host)}:{admin.port}   (/metrics, /admin/...)\n"
    except (RuntimeError, TimeoutError, OSError):
        for server in reversed(started):
            server.stop()
        print(f"qiskit-classic-proxy: the demo proxy did not start on {base} (see the lines above)", file=sys.stderr)
        return 1
    tokens = settings.client_token_names
    auth = {"X-Access-Token": next(iter(tokens))} if tokens else None
    v1_line = v1_example(base, emulator_app.state.emulator, auth)
    intercept = app.intercept
    zero = (
        f"\nZero-change mode (no url= at all), in the shell that runs the legacy code:\n"
        f"  export HTTPS_PROXY=http://127.0.0.1:{intercept.port} REQUESTS_CA_BUNDLE={intercept.ca.cert_path}\n"
        if intercept is not None else ""
    )
    token_note = (
        "\nClient tokens are required (client_tokens): log in first, as examples/curl/jobs.sh does, and add\n"
        "  -H \"X-Access-Token: $TOKEN\" to the curl lines below.\n"
        if tokens else ""
    )
    if usage_db:
        kept = " (a temp file, kept when the demo stops)" if record_dir else ""
        record = (
            f"Usage record: {settings.usage_db if record_dir else _shown_db(usage_db)}{kept}; "
            f"the migration report of the calls above, also after Ctrl-C:\n"
            f"  {report_command(usage_db, getattr(args, 'config', None))}\n"
        )
    else:
        record = "Usage record: off (usage_db is \"\")\n"
    print(f"""
qiskit-classic-proxy demo
  proxy:    {base}   (Classic API: {base}/runtime/..., {base}/api/...)
  emulator: {emulator.url}   (a fake of the new API at /api/v1 and of IAM, for this demo)
{admin_line}{token_note}
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

{record}
Legacy SDKs: QiskitRuntimeService(channel="ibm_quantum", url="{base}/api", token="anything")
{zero}Ctrl-C to stop.""", flush=True)
    try:
        with stop_on_sigterm():
            deadline = time.monotonic() + args.seconds if getattr(args, "seconds", None) else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):  # the proxy first: its shutdown writes the usage record out
            server.stop()
    return 0


def _shown_db(url: str) -> str:
    from ..store import redact

    return redact(url)
