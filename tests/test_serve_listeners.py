"""`serve` as a real process with the listening-side options: HTTPS (--ssl-*), the admin port,
and JSON logs where every line, uvicorn's own included, parses as JSON."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, stop_process
from .tlsnet import Pki, make_ca

CLIENT_TOKEN = "ci-client-token-1"


@contextmanager
def serve(emulator: EmulatorHandle, *flags: str, cwd: Path) -> Iterator[list[str]]:
    """Run `serve` with the emulator as upstream; yields a list that holds the output after exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "QISKIT_IBM_"))}
    env.update(QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
               QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB="")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", *flags], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    try:
        yield out
    finally:
        text = stop_process(proc)
        out.append(text)
        out.append(str(proc.returncode))


def wait_ok(url: str, verify: ssl.SSLContext | bool = True, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_ca(tmp_path_factory.mktemp("pki"), "127.0.0.1", "localhost")


def test_serve_with_ssl_flags_answers_https(emulator: EmulatorHandle, pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    trust = ssl.create_default_context(cafile=str(pki.ca_pem))
    with serve(emulator, "--port", str(port), "--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key),
               cwd=tmp_path) as out:
        base = f"https://127.0.0.1:{port}"
        wait_ok(base + "/healthz", verify=trust)
        r = httpx.get(base + "/runtime/backends", verify=trust, timeout=10)
        assert r.status_code == 200, r.text
        me = httpx.get(base + "/api/users/me", verify=trust, timeout=10)
        assert base in me.text  # legacy SDKs are sent back to the https URL
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # plain HTTP is not served
    assert DEMO_API_KEY not in out[0]


def test_admin_port_serves_metrics_and_the_main_port_does_not_with_json_logs(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    with serve(emulator, "--port", str(port), "--admin-port", str(admin), "--log-format", "json", cwd=tmp_path) as out:
        main_url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        wait_ok(admin_url + "/readyz")
        assert httpx.get(main_url + "/runtime/backends", timeout=10).status_code == 200
        assert httpx.get(main_url + "/readyz", timeout=10).status_code == 200  # kubelet probes may use either
        assert httpx.get(main_url + "/metrics", timeout=10).status_code == 404
        assert httpx.get(main_url + "/admin/usage", timeout=10).status_code == 404
        metrics = httpx.get(admin_url + "/metrics", timeout=10)
        assert metrics.status_code == 200
        assert 'qcp_requests_total{action="forward"' in metrics.text
        assert "qcp_build_info{" in metrics.text and "process_resident_memory_bytes" in metrics.text
        assert httpx.get(admin_url + "/runtime/backends", timeout=10).status_code == 404  # nothing legacy there
        assert httpx.get(main_url + "/runtime/nope-404", timeout=10).status_code == 404
    text, code = out
    assert code in ("0", str(-signal.SIGTERM)), text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line is JSON, or this raises
    loggers = {d["logger"] for d in docs}
    assert {"uvicorn.error", "qiskit_classic_proxy.access"} <= loggers, loggers
    assert any("Application startup complete" in d.get("msg", "") for d in docs)
    assert any("Application shutdown complete" in d.get("msg", "") for d in docs)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--workers", "2", "--admin-port", "9"], "QCP_ADMIN_PORT (admin_port): not with workers > 1"),
        (["--ssl-keyfile", __file__], "--ssl-keyfile (flag): set without ssl_certfile"),
        (["--ssl-certfile", "/nonexistent/cert.pem"], "--ssl-certfile (flag): file not found"),
    ],
)
def test_listener_options_that_cannot_work_are_refused_naming_the_setting(
    flags: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.commands.main import EXIT_CONFIG, main

    for name in [n for n in os.environ if n.startswith("QCP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QCP_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("QCP_SERVICE_CRN", DEMO_CRN)
    monkeypatch.setenv("QCP_USAGE_DB", "")
    assert main(["serve", "--port", "0", *flags]) == EXIT_CONFIG
    assert says in capsys.readouterr().err
