"""`demo`: the emulator and the proxy on loopback, with curl commands that work."""

from __future__ import annotations

import argparse
import sys
import time

from ..config import load_settings


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + proxy on loopback, with curl commands that work. No IBM account needed."""
    from ..app import create_app
    from ..emulator import DEMO_API_KEY, DEMO_CRN, EmulatorConfig, create_emulator_app
    from ..logs import configure
    from ..serving import BackgroundServer

    try:
        emulator = BackgroundServer(create_emulator_app(EmulatorConfig()), port=args.emulator_port or None).start()
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
        proxy = BackgroundServer(app, port=args.port, access_log=False, server_header=False).start()
    except (RuntimeError, TimeoutError, OSError):
        emulator.stop()
        print(f"qiskit-classic-proxy: cannot listen on 127.0.0.1:{args.port} (in use?); try --port", file=sys.stderr)
        return 1
    base = proxy.url
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
