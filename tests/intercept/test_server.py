"""The intercepting forward proxy, through real loopback servers: CONNECT, the local-CA leaf, the
tunnel as a trust boundary, refusal or byte-for-byte tunnelling of other hosts."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from proxy.intercept.ca import LocalCA
from proxy.serving import BackgroundServer

from ..conftest import EmulatorHandle, Running

HOST = "api.quantum-computing.ibm.com"


def _connect(port: int, target: str) -> tuple[socket.socket, bytes]:
    """CONNECT through the listener; the socket and the proxy's answer head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def _read_response(tls: ssl.SSLSocket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(h.lower().split(b": ", 1) for h in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.fixture
def intercepting(make_proxy: Callable[..., Running], tmp_path: Path) -> Callable[..., tuple[Running, int, Path]]:
    def make(**overrides: object) -> tuple[Running, int, Path]:
        """A proxy with its intercepting listener on a free port; (proxy, listener port, CA path)."""
        running = make_proxy(intercept_port=0, ca_dir=str(tmp_path / "ca"), **overrides)
        assert running.app.intercept is not None
        return running, running.app.intercept.port, running.app.intercept.ca.cert_path

    return make


def _client(port: int, ca: Path) -> httpx.Client:
    return httpx.Client(
        proxy=f"http://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(ca)), trust_env=False, timeout=20
    )


def test_intercepted_host_is_served_like_the_main_port(
    intercepting: Callable[..., tuple[Running, int, Path]], emulator: EmulatorHandle
) -> None:
    _, port, ca = intercepting()
    emulator.clear()
    with _client(port, ca) as c:
        token = c.post(f"https://{HOST}/api/users/loginWithToken", json={"apiToken": "caller-own-token"}).json()["id"]
        me = c.get(f"https://{HOST}/api/users/me", headers={"x-access-token": token}).json()
        # The SDK takes every later URL from /users/me: they stay on the IBM host, hence in the tunnel.
        assert me["urls"]["services"]["runtime"] == f"https://{HOST}/runtime"
        r = c.get(f"https://{HOST}/runtime/backends", headers={"x-access-token": token})
    assert r.status_code == 200, r.text
    assert "fake_manila" in r.json()["devices"]
    sent = emulator.api_requests()
    assert sent and all(h["headers"]["authorization"].startswith("Bearer ") for h in sent)
    assert not any(token in json.dumps(h["headers"]) or "caller-own-token" in json.dumps(h) for h in sent)


def test_the_leaf_names_only_the_intercepted_host(intercepting: Callable[..., tuple[Running, int, Path]]) -> None:
    _, port, ca = intercepting()
    sock, head = _connect(port, f"{HOST}:443")
    assert head.startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=str(ca))
    with ctx.wrap_socket(sock, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.value.get_values_for_type(x509.DNSName) == [HOST]


def test_regression_a_foreign_host_header_inside_the_tunnel_is_still_refused(
    intercepting: Callable[..., tuple[Running, int, Path]],
) -> None:
    """The tunnel admits the CONNECT host only: DNS-rebinding protection still holds for any other Host."""
    _, port, ca = intercepting()
    sock, _ = _connect(port, f"{HOST}:443")
    with ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname=HOST) as tls:
        tls.sendall(b"GET /api/version HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        status, doc = _read_response(tls)
        assert status == 400 and doc["errors"][0]["code"] == "bad_host"
        tls.sendall(f"GET /api/version HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())  # same connection, kept alive
        status, doc = _read_response(tls)
        assert status == 200 and doc["proxy"] == "qiskit-classic-proxy"


def test_other_hosts_are_refused_by_default(intercepting: Callable[..., tuple[Running, int, Path]]) -> None:
    _, port, _ = intercepting()
    sock, head = _connect(port, "pypi.org:443")
    sock.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert b"host_not_intercepted" in head or b"NO_PROXY" in head


def test_plain_requests_and_malformed_targets_get_clear_errors(
    intercepting: Callable[..., tuple[Running, int, Path]],
) -> None:
    _, port, _ = intercepting()
    r = httpx.get(f"http://127.0.0.1:{port}/api/version", trust_env=False, timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "connect_only"
    sock, head = _connect(port, "no-port-here")
    sock.close()
    assert head.startswith(b"HTTP/1.1 400")


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[BackgroundServer, bytes, Path]]:
    """A TLS server on loopback with a certificate from a CA of its own (not the proxy's)."""
    own = LocalCA(tmp_path / "canary-ca")
    chain, key = own.leaf_pem("127.0.0.1")
    (tmp_path / "c.pem").write_bytes(chain)
    (tmp_path / "c.key").write_bytes(key)

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"17")]})
        await send({"type": "http.response.body", "body": b"canary says hello"})

    server = BackgroundServer(
        app, lifespan="off", ssl_certfile=str(tmp_path / "c.pem"), ssl_keyfile=str(tmp_path / "c.key")
    ).start()
    leaf = x509.load_pem_x509_certificates(chain)[0]
    yield server, leaf.public_bytes(Encoding.DER), own.cert_path
    server.stop()


def test_other_hosts_are_tunnelled_byte_for_byte_when_allowed(
    intercepting: Callable[..., tuple[Running, int, Path]], canary: tuple[BackgroundServer, bytes, Path]
) -> None:
    server, canary_der, canary_ca = canary
    _, port, _ = intercepting(intercept_other_hosts="tunnel")
    sock, head = _connect(port, f"127.0.0.1:{server.port}")
    assert head.startswith(b"HTTP/1.1 200")
    with ssl.create_default_context(cafile=str(canary_ca)).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert tls.getpeercert(binary_form=True) == canary_der  # its own certificate, not a proxy leaf
        tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.endswith(b"canary says hello")


def test_a_tunnel_to_a_closed_port_is_a_502(intercepting: Callable[..., tuple[Running, int, Path]]) -> None:
    from proxy.serving import free_port

    _, port, _ = intercepting(intercept_other_hosts="tunnel")
    sock, head = _connect(port, f"127.0.0.1:{free_port()}")
    sock.close()
    assert head.startswith(b"HTTP/1.1 502") and b"tunnel_failed" in head


def test_a_caller_that_does_not_trust_the_ca_fails_and_the_log_says_why(
    intercepting: Callable[..., tuple[Running, int, Path]], captured_logs: io.StringIO
) -> None:
    _, port, ca = intercepting()
    with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:  # system CAs only
        with pytest.raises(httpx.ConnectError):
            c.get(f"https://{HOST}/api/version")
    for _ in range(50):  # the server logs after the client gave up: wait for it, boundedly
        if "REQUESTS_CA_BUNDLE" in captured_logs.getvalue():
            break
        threading.Event().wait(0.05)
    assert f"REQUESTS_CA_BUNDLE={ca}" in captured_logs.getvalue()


def test_regression_an_oversized_body_gets_413_and_the_tunnel_closes(
    intercepting: Callable[..., tuple[Running, int, Path]], emulator: EmulatorHandle
) -> None:
    """The unread rest of a refused body is not read through: the connection is closed instead."""
    emulator.clear()
    _, port, ca = intercepting(max_body_bytes=2048)
    sock, _ = _connect(port, f"{HOST}:443")
    with ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname=HOST) as tls:
        tls.sendall(f"POST /runtime/jobs HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 50000000\r\n\r\n".encode())
        tls.sendall(b"{" + b" " * (2 * 1024 * 1024))
        status, doc = _read_response(tls)
        assert status == 413 and doc["errors"][0]["code"] == "payload_too_large"
        tls.settimeout(10)
        rest = b""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while chunk := tls.recv(65536):
                rest += chunk
        assert rest == b""
    assert emulator.api_requests() == []
