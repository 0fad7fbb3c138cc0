"""`check` as a user runs it (the real console script): what failed, where and why; exit 0 / 1 / 2."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.commands.check import unreachable
from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from ..conftest import EmulatorHandle
from ..tlsnet import make_ca, start_tls_emulator

CLI = Path(sys.executable).with_name("qiskit-classic-proxy")
CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc:inst::"


def check(**env: str | None) -> subprocess.CompletedProcess[str]:
    """`check` with the demo credentials and `env` on top (None: unset)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "QISKIT_IBM_"))}
    merged = {"QCP_API_KEY": DEMO_API_KEY, "QCP_SERVICE_CRN": DEMO_CRN, "QCP_USAGE_DB": "", **env}
    base.update({k: v for k, v in merged.items() if v is not None})
    base["QISKIT_IBM_FILENAME"] = os.devnull  # no saved account of this machine's user
    return subprocess.run([str(CLI), "check"], capture_output=True, text=True, env=base, timeout=120)


def fail_line(r: subprocess.CompletedProcess[str], name: str) -> str:
    m = re.search(rf"^{name}\s+FAIL\s+(.*)$", r.stdout, re.M)
    assert m, r.stdout + r.stderr
    return m.group(1)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_regression_check_said_iam_unreachable_without_url_or_cause(closed_port: int) -> None:
    """It printed `IAM unreachable (ConnectError)`: now the URL and 'connection refused'."""
    url = f"http://127.0.0.1:{closed_port}/identity/token"
    r = check(QCP_IAM_URL=url)
    assert r.returncode == 1, r.stdout + r.stderr
    assert fail_line(r, "iam") == f"IAM {url} unreachable: connection refused"
    assert r.stderr == ""  # said once, on the iam line (not also as a log line)


def test_check_names_an_iam_that_never_answers_within_the_timeout(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/identity/token"
    r = check(QCP_IAM_URL=url, QCP_IAM_TIMEOUT="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert fail_line(r, "iam") == f"IAM {url} unreachable: no answer within 1s (timeout)"


def test_check_names_an_iam_host_dns_cannot_find() -> None:
    url = "https://iam.quantum.invalid/identity/token"  # .invalid never resolves (RFC 6761)
    r = check(QCP_IAM_URL=url, QCP_IAM_TIMEOUT="5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert fail_line(r, "iam").startswith(f"IAM {url} unreachable: DNS lookup failed"), r.stdout


def test_check_names_a_tls_certificate_it_cannot_verify(tmp_path: Path) -> None:
    """A certificate from a CA the machine does not trust (a TLS-inspecting proxy does this)."""
    tls = start_tls_emulator(make_ca(tmp_path))
    try:
        url = f"https://127.0.0.1:{tls.server.port}/identity/token"
        r = check(QCP_IAM_URL=url, QCP_UPSTREAM_URL=f"https://127.0.0.1:{tls.server.port}/api")
    finally:
        tls.server.stop()
    assert r.returncode == 1, r.stdout + r.stderr
    line = fail_line(r, "iam")
    assert line.startswith(f"IAM {url} unreachable: TLS certificate verify failed"), line
    assert "QCP_CA_BUNDLE" in line


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_check_names_the_new_api_url_and_cause(
    emulator: EmulatorHandle, kind: str, closed_port: int, silent_port: int
) -> None:
    port = closed_port if kind == "closed" else silent_port
    upstream = f"http://127.0.0.1:{port}/api"
    r = check(QCP_IAM_URL=emulator.url + "/identity/token", QCP_UPSTREAM_URL=upstream,
              QCP_READ_TIMEOUT="1", QCP_CONNECT_TIMEOUT="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^iam\s+ok", r.stdout, re.M), r.stdout
    cause = "connection refused" if kind == "closed" else "no answer within 1s (timeout)"
    assert fail_line(r, "versions") == f"new API {upstream}/v1/versions unreachable: {cause}"
    assert re.search(r"^usage\s+skip", r.stdout, re.M), r.stdout  # not a second wait for the same answer
    assert DEMO_API_KEY not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"QCP_API_KEY": None, "QCP_SERVICE_CRN": None}, "QCP_API_KEY"),
        ({"QCP_SERVICE_CRN": None}, "QCP_SERVICE_CRN"),
        ({"QCP_HOST": "0.0.0.0"}, "QCP_HOST"),
        ({"QCP_PORT": "http"}, "QCP_PORT"),
        ({"QCP_CA_BUNDLE": "/nonexistent/ca.pem"}, "QCP_CA_BUNDLE (env)"),
    ],
)
def test_regression_check_exit_code_for_a_config_problem_was_1(env: dict[str, str | None], names: str) -> None:
    """A configuration problem is exit 2 and one line, as for serve (it printed `config FAIL`, exit 1)."""
    r = check(QCP_IAM_URL=f"http://127.0.0.1:{free_port()}/identity/token", **env)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], r.stderr
    assert "iam" not in r.stdout  # nothing was contacted
    assert "Traceback" not in r.stderr


def test_unreachable_names_dns_refused_and_tls_causes() -> None:
    """The words for the causes httpx wraps (the chain as httpx and httpcore raise it)."""

    def wrapped(cause: BaseException, cls: type[httpx.HTTPError] = httpx.ConnectError) -> httpx.HTTPError:
        try:
            try:
                raise cause
            except BaseException as exc:
                raise cls(str(exc)) from exc
        except httpx.HTTPError as outer:
            return outer

    assert unreachable(wrapped(socket.gaierror(-2, "Name or service not known")), 5) == (
        "DNS lookup failed (Name or service not known)"
    )
    assert unreachable(wrapped(ConnectionRefusedError(111, "Connection refused")), 5) == "connection refused"
    assert unreachable(wrapped(TimeoutError(), httpx.ConnectTimeout), 5, 2) == "no connection within 2s (timeout)"
    assert unreachable(wrapped(OSError(113, "No route to host")), 5) == "no route to host"
    assert unreachable(httpx.RemoteProtocolError("closed"), 5) == "the connection closed without an answer"
