"""proxy.upstream.egress: outbound proxy and CA bundle, proven through real loopback parts.

The emulator is served over TLS (a trustme test CA) and reachable only as `quantum.invalid`
through a small CONNECT proxy (tests/tlsnet.py): `.invalid` never resolves, so an answer means
the request went through the proxy; a direct connection fails at DNS.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import ConfigError, load_settings
from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.upstream import egress

from ..conftest import EmulatorHandle, Running, start_emulator, start_proxy
from ..tlsnet import HOST, ConnectProxy, Pki, connect_proxy, make_ca, start_tls_emulator

PASSWORD = "pr0xy-s3cret-pw"
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_emulator(pki: Pki) -> Iterator[EmulatorHandle]:
    emu = start_tls_emulator(pki)
    yield emu
    emu.server.stop()


@pytest.fixture
def corp_proxy(tls_emulator: EmulatorHandle) -> Iterator[ConnectProxy]:
    with connect_proxy({HOST: tls_emulator.server.port}, credentials=("alice", PASSWORD)) as p:
        yield p


@pytest.fixture
def proxies() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.server.stop()


def settings_for(**overrides: Any) -> Any:
    base: dict[str, Any] = {
        "api_key": DEMO_API_KEY,
        "service_crn": DEMO_CRN,
        "upstream_url": f"https://{HOST}/api",
        "iam_url": f"https://{HOST}/identity/token",
        "usage_db": "",
    }
    base.update(overrides)
    return load_settings(None, **base)


def run(proxies: list[Running], **overrides: Any) -> Running:
    running = start_proxy(settings_for(**overrides))
    proxies.append(running)
    return running


# ------------------------------------------------------------------ choosing the proxy (unit)


def test_explicit_outbound_proxy_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    s = settings_for(outbound_proxy="http://bob:pw@explicit:8080")
    p = egress.proxy_for(s, "https://quantum.cloud.ibm.com/api")
    assert p is not None and (p.host, p.port, p.username, p.source) == ("explicit", 8080, "bob", "QCP_OUTBOUND_PROXY")


def test_env_proxy_is_read_with_its_variable_name_and_scheme_less_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "proxy.corp:3128")
    p = egress.proxy_for(settings_for(), "https://iam.cloud.ibm.com/identity/token")
    assert p is not None and (p.host, p.port, p.source) == ("proxy.corp", 3128, "https_proxy")
    assert egress.proxy_for(settings_for(), "http://plain.example/api") is None  # no HTTP_PROXY


def test_no_proxy_and_the_opt_out_make_connections_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.cloud.ibm.com")
    assert egress.proxy_for(settings_for(), "https://iam.cloud.ibm.com/identity/token") is None
    assert egress.proxy_for(settings_for(), "https://quantum.invalid/api") is not None
    monkeypatch.setenv("NO_PROXY", "*")
    assert egress.proxy_for(settings_for(), "https://quantum.invalid/api") is None
    monkeypatch.delenv("NO_PROXY")
    assert egress.proxy_for(settings_for(proxy_from_env=False), "https://quantum.invalid/api") is None


def test_loopback_upstreams_never_take_the_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression guard: `demo` and a local emulator must keep working on a machine with HTTP_PROXY set."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    for url in ("http://127.0.0.1:8081/api", "http://localhost:9/x", "http://[::1]:8080/api"):
        assert egress.proxy_for(settings_for(), url) is None, url
    explicit = settings_for(outbound_proxy="http://proxy.corp:3128")
    assert egress.proxy_for(explicit, "http://127.0.0.1:8081/api") is not None  # asked for: honoured


def test_proxy_credentials_never_show_in_repr_display_or_errors() -> None:
    p = egress.parse_proxy(f"http://alice:{PASSWORD}@proxy.corp:3128", "QCP_OUTBOUND_PROXY")
    assert PASSWORD not in repr(p) and PASSWORD not in str(p) and PASSWORD not in p.display
    assert p.display == "http://***@proxy.corp:3128"
    with pytest.raises(ValueError) as err:
        egress.parse_proxy(f"socks5://alice:{PASSWORD}@proxy.corp:1080", "HTTPS_PROXY")
    assert PASSWORD not in str(err.value) and "socks5" in str(err.value)
    s = settings_for(outbound_proxy=f"http://alice:{PASSWORD}@proxy.corp:3128")
    assert PASSWORD not in repr(s) and PASSWORD not in egress.describe(s, s.effective_upstream_url)


def test_ca_bundle_comes_from_the_setting_then_ssl_cert_file_then_requests(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_pem))
    assert egress.ca_bundle(settings_for()) == (str(pki.ca_pem), "REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.cert))
    assert egress.ca_bundle(settings_for()) == (str(pki.cert), "SSL_CERT_FILE")
    assert egress.ca_bundle(settings_for(ca_bundle=str(pki.ca_pem))) == (str(pki.ca_pem), "QCP_CA_BUNDLE")


def test_a_bad_ca_bundle_is_a_config_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^--ca-bundle \(flag\): file not found"):
        settings_for(ca_bundle=str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    monkeypatch.setenv("SSL_CERT_FILE", str(junk))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(ConfigError, match=r"^SSL_CERT_FILE \(ca_bundle\): cannot load CA bundle"):
        egress.ssl_context(settings_for())


# ------------------------------------------------------------------ through the real CONNECT proxy


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_the_new_api_and_iam_are_reached_only_through_the_connect_proxy(
    transport: str, pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy, proxies: list[Running],
    captured_logs: io.StringIO,
) -> None:
    tls_emulator.clear()
    p = run(proxies, transport=transport, outbound_proxy=corp_proxy.url_with("alice", PASSWORD),
            ca_bundle=str(pki.ca_pem))
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code == 200, r.text
    assert tls_emulator.api_requests(), "the request never reached the emulator"
    tunnels = [s for s in corp_proxy.seen if s.method == "CONNECT"]
    assert {s.target for s in tunnels} == {f"{HOST}:443"}  # IAM and the new API, both tunnelled
    assert len(tunnels) >= 2 and all(s.proxy_authorization and s.proxy_authorization.startswith("Basic ")
                                     for s in tunnels)
    assert PASSWORD not in captured_logs.getvalue()


def test_the_proxy_reads_https_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy,
    proxies: list[Running],
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", corp_proxy.url_with("alice", PASSWORD))
    p = run(proxies, ca_bundle=str(pki.ca_pem))
    assert httpx.get(p.url + "/runtime/backends", timeout=20).status_code == 200
    assert any(s.method == "CONNECT" for s in corp_proxy.seen)


def test_without_the_proxy_the_unresolvable_host_is_a_502(
    pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy, proxies: list[Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the test setup refuses direct connections (no DNS for .invalid)."""
    monkeypatch.setenv("HTTPS_PROXY", corp_proxy.url_with("alice", PASSWORD))
    monkeypatch.setenv("NO_PROXY", HOST)  # NO_PROXY sends it direct, where it cannot resolve
    p = run(proxies, ca_bundle=str(pki.ca_pem))
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code in (502, 503), r.text
    assert corp_proxy.seen == []


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_wrong_proxy_password_is_a_502_naming_407_without_the_password(
    transport: str, pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy, proxies: list[Running],
    captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # IAM direct (it works), the new API through the proxy
    p = run(proxies, transport=transport, outbound_proxy=corp_proxy.url_with("alice", "wrong-" + PASSWORD),
            ca_bundle=str(pki.ca_pem), iam_url=tls_emulator.url.replace("http://", "https://") + "/identity/token")
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code == 502, r.text
    assert "407" in r.json()["errors"][0]["message"] and PASSWORD not in r.text
    assert PASSWORD not in captured_logs.getvalue()


def test_iam_behind_a_refusing_proxy_says_so(
    pki: Pki, corp_proxy: ConnectProxy, proxies: list[Running], captured_logs: io.StringIO
) -> None:
    p = run(proxies, outbound_proxy=corp_proxy.url_with("alice", "wrong-" + PASSWORD), ca_bundle=str(pki.ca_pem))
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code == 503, r.text
    assert "407" in r.json()["errors"][0]["message"] and PASSWORD not in r.text
    assert PASSWORD not in captured_logs.getvalue()


def test_the_ca_bundle_is_what_makes_the_tls_upstream_trusted(
    pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy, proxies: list[Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    tls_emulator.clear()
    p = run(proxies, outbound_proxy=corp_proxy.url_with("alice", PASSWORD))  # certifi: the test CA is unknown
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code in (502, 503), r.text
    assert tls_emulator.requests == []  # the TLS handshake failed before any request
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_pem))
    p2 = run(proxies, outbound_proxy=corp_proxy.url_with("alice", PASSWORD))
    assert httpx.get(p2.url + "/runtime/backends", timeout=20).status_code == 200


def test_plain_http_upstreams_go_through_the_proxy_in_absolute_form(proxies: list[Running]) -> None:
    emu = start_emulator()
    try:
        with connect_proxy({"plain.invalid": emu.server.port}) as corp:
            p = run(proxies, upstream_url="http://plain.invalid/api", iam_url="http://plain.invalid/identity/token",
                    outbound_proxy=corp.url)
            r = httpx.get(p.url + "/runtime/backends", timeout=20)
            assert r.status_code == 200, r.text
            assert any(s.method == "GET" and s.target.startswith("http://plain.invalid/api/") for s in corp.seen)
    finally:
        emu.server.stop()


def test_check_goes_through_the_connect_proxy_too(
    pki: Pki, tls_emulator: EmulatorHandle, corp_proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from proxy.commands.main import main

    for name, value in {
        "QCP_API_KEY": DEMO_API_KEY, "QCP_SERVICE_CRN": DEMO_CRN, "QCP_CA_BUNDLE": str(pki.ca_pem),
        "HTTPS_PROXY": corp_proxy.url_with("alice", PASSWORD),
    }.items():
        monkeypatch.setenv(name, value)
    code = main(["check", "--upstream-url", f"https://{HOST}/api", "--iam-url", f"https://{HOST}/identity/token"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "egress     via http://***@127.0.0.1" in out and "(HTTPS_PROXY)" in out and PASSWORD not in out
    assert [s.target for s in corp_proxy.seen if s.method == "CONNECT"] == [f"{HOST}:443"] * 2  # IAM + new API


@contextmanager
def broken_proxy(behaviour: str) -> Iterator[str]:
    """A loopback "proxy" that misbehaves: closes at once, answers garbage, or never answers."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            if behaviour == "close":
                conn.close()
                continue
            conn.settimeout(2)
            with suppress(OSError):
                conn.recv(4096)
            if behaviour == "garbage":
                with suppress(OSError):
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
                conn.close()
            else:
                held.append(conn)  # "silent": keep it open, say nothing

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


@pytest.mark.parametrize(("behaviour", "status", "says"), [
    ("close", 502, "closed the connection during CONNECT"),
    ("garbage", 502, "no HTTP status line"),
    ("silent", 504, "timed out"),
])
def test_a_misbehaving_proxy_is_a_clear_answer_not_a_hang(
    behaviour: str, status: int, says: str, pki: Pki, tls_emulator: EmulatorHandle, proxies: list[Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # IAM direct; the new API through the broken proxy
    with broken_proxy(behaviour) as url:
        p = run(proxies, outbound_proxy=url, ca_bundle=str(pki.ca_pem), connect_timeout=0.5,
                iam_url=tls_emulator.url.replace("http://", "https://") + "/identity/token")
        r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert says in r.json()["errors"][0]["message"]
