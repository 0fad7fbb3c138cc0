#!/usr/bin/env python3
"""Record what a legacy SDK sends to the proxy, as a JSONL trace (one request a line).

Why: the translation of V1 jobs (issue #12) is unit-tested on the exact bodies a real old SDK
sends. This starts the emulator and a proxy on loopback, wraps the proxy in a recorder, runs one
driver in its legacy venv and writes every Classic request it received (method, path, query,
headers with secrets replaced, JSON body, answer status). Runs in the project's venv:

    .venv/bin/python tests/legacy/record_trace.py --venv runtime-0.20.0 --driver drive_runtime_v1.py \
        --out tests/data/trace-qiskit-ibm-runtime-0.20.0-v1.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from proxy.app import create_app  # noqa: E402
from proxy.config import load_settings  # noqa: E402
from proxy.emulator import DEMO_API_KEY, DEMO_CRN, create_emulator_app  # noqa: E402
from proxy.serving import BackgroundServer  # noqa: E402

SECRET_HEADERS = frozenset({"authorization", "x-access-token", "cookie", "set-cookie"})


class Recorder:
    """ASGI middleware: buffer each HTTP request's body, pass it on, note the answer's status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entries: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"__unparsed_bytes__": len(raw)}
        headers = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            headers[name] = "<redacted>" if name.lower() in SECRET_HEADERS else v.decode("latin-1")
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": urllib.parse.parse_qs(scope.get("query_string", b"").decode()),
            "headers": headers,
            "body": body,
            "status": None,
        }
        self.entries.append(entry)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def watch(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                entry["status"] = msg["status"]
            await send(msg)

        await self.app(scope, replay, watch)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", required=True, help="legacy venv name, e.g. runtime-0.20.0")
    p.add_argument("--driver", required=True, help="driver script in tests/legacy/")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--only", default="", help="keep only requests whose path contains this ('' = all)")
    args = p.parse_args()
    venvs = subprocess.run(["bash", str(HERE / "setup_venvs.sh"), "--print-dir"], capture_output=True, text=True)
    python = Path(venvs.stdout.strip()) / args.venv / "bin" / "python"
    emulator = BackgroundServer(create_emulator_app()).start()
    settings = load_settings(
        None,
        api_key=DEMO_API_KEY,
        service_crn=DEMO_CRN,
        upstream_url=emulator.url + "/api",
        iam_url=emulator.url + "/identity/token",
        usage_db="",
    )
    recorder = Recorder(create_app(settings))
    proxy = BackgroundServer(recorder, access_log=False).start()
    try:
        proc = subprocess.run(
            [str(python), str(HERE / args.driver), "--url", proxy.url + "/api", "--token", "trace-token"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    finally:
        proxy.stop()
        emulator.stop()
    kept = [e for e in recorder.entries if args.only in e["path"]]
    with open(args.out, "w") as f:
        for e in kept:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    print(f"{len(kept)} of {len(recorder.entries)} requests written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
