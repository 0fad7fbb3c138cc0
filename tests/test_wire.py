"""Header limits, header read timeout, connection cap: raw sockets against a real proxy server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, Running, stop_process, wait_until_ok

GET = b"GET /runtime/backends HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@contextmanager
def conn(proxy: Running, timeout: float = 10.0) -> Iterator[socket.socket]:
    s = socket.create_connection((proxy.server.host, proxy.server.port), timeout=timeout)
    try:
        yield s
    finally:
        s.close()


def read_answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer (until Content-Length, or the server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def refused(proxy: Running) -> dict[str, int]:
    return dict(proxy.app.wire.refused)


def test_64k_header_is_431_json_and_nothing_is_forwarded(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle
) -> None:
    proxy = make_proxy()
    emulator.clear()
    with conn(proxy) as s:
        s.sendall(GET + b"X-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        status, headers, body = read_answer(s)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body)["errors"][0]["code"] == "header_too_large"
    assert "QCP_MAX_HEADER_BYTES" in json.loads(body)["errors"][0]["message"]
    assert emulator.api_requests() == []
    assert refused(proxy) == {"header_too_large": 1}


def test_unfinished_8mb_header_is_refused_before_it_is_buffered(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(max_header_bytes=16 * 1024)
    sent = 0
    with conn(proxy) as s:
        s.sendall(GET + b"X-Big: ")
        s.settimeout(0.05)
        answer = b""
        while sent < 8 * 1024 * 1024:  # bounded: at most the 8 MB the attacker meant to send
            try:
                s.sendall(b"a" * 4096)
                sent += 4096
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = s.recv(65536)
            except TimeoutError:
                continue
            break
        s.settimeout(10)
        answer += s.recv(65536) if b"\r\n\r\n" not in answer else b""
    assert answer.startswith(b"HTTP/1.1 431 ")
    # The proxy stopped reading a few socket buffers after its limit, not after 8 MB.
    assert sent < 2 * 1024 * 1024
    assert refused(proxy) == {"header_too_large": 1}


def test_over_100_header_fields_is_431(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy()
    with conn(proxy) as s:
        s.sendall(GET + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n")
        status, _, body = read_answer(s)
    assert status == 431 and json.loads(body)["errors"][0]["code"] == "too_many_headers"


def test_ordinary_large_headers_still_pass(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy()
    r = httpx.get(proxy.url + "/runtime/backends", headers={"Cookie": "c=" + "x" * 8000}, timeout=10)
    assert r.status_code == 200


def test_identity_chunked_transfer_coding_is_400_and_not_forwarded(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle
) -> None:
    proxy = make_proxy()
    emulator.clear()
    with conn(proxy) as s:
        s.sendall(
            b"POST /runtime/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: identity, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        status, _, body = read_answer(s)
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "bad_transfer_encoding"
    assert emulator.api_requests() == []


def test_slowloris_connections_are_closed_after_the_header_timeout(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(header_timeout=0.5)
    socks = [socket.create_connection((proxy.server.host, proxy.server.port), timeout=10) for _ in range(30)]
    try:
        for s in socks:
            s.sendall(GET)
        closed = [False] * len(socks)
        for _ in range(60):  # trickle one header line each 0.1 s; bounded at 6 s
            for i, s in enumerate(socks):
                if not closed[i]:
                    try:
                        s.sendall(b"X-Trickle: 1\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        closed[i] = True
            if all(closed):
                break
            time.sleep(0.1)
        for i, s in enumerate(socks):
            closed[i] = closed[i] or closed_by_server(s)
    finally:
        for s in socks:
            s.close()
    assert all(closed)
    assert refused(proxy) == {"header_timeout": 30}


def test_silent_connection_is_closed_after_the_header_timeout(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(header_timeout=0.3)
    with conn(proxy) as s:
        assert closed_by_server(s)  # recv blocks until the server gives up (socket timeout: 10 s)
    assert refused(proxy)["header_timeout"] == 1


def test_idle_keepalive_connection_is_closed_and_not_counted_as_slowloris(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(keepalive_timeout=0.3, header_timeout=0.2)
    with conn(proxy) as s:
        s.sendall(GET + b"\r\n")
        assert read_answer(s)[0] == 200
        assert closed_by_server(s)
    assert refused(proxy) == {}


def test_over_max_connections_is_503_with_retry_after(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(max_client_connections=3)
    held = [socket.create_connection((proxy.server.host, proxy.server.port), timeout=10) for _ in range(3)]
    try:
        for s in held:
            s.sendall(GET + b"\r\n")
            assert read_answer(s)[0] == 200  # each stays open (keep-alive)
        with conn(proxy) as s:
            s.sendall(GET + b"\r\n")
            status, headers, body = read_answer(s)
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body)["errors"][0]["code"] == "too_many_connections"
            assert closed_by_server(s)
        held.pop().close()
        for _ in range(100):  # the server notices the close on its next loop turn; bounded
            if len(proxy.server.server.server_state.connections) < 3:
                break
            time.sleep(0.01)
        with conn(proxy) as s:
            s.sendall(GET + b"\r\n")
            assert read_answer(s)[0] == 200
    finally:
        for s in held:
            s.close()
    assert refused(proxy) == {"too_many_connections": 1}


def test_refusals_are_counted_in_metrics(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy()
    with conn(proxy) as s:
        s.sendall(GET + b"X-Big: " + b"a" * 40 * 1024 + b"\r\n\r\n")
        assert read_answer(s)[0] == 431
    text = httpx.get(proxy.url + "/metrics", timeout=10).text
    assert 'qcp_refused_total{reason="header_too_large"} 1.0' in text


def test_limits_reach_the_protocol_through_the_app(make_proxy: Callable[..., Running]) -> None:
    proxy: Any = make_proxy(max_header_bytes=2048)
    assert proxy.app.wire.max_header_bytes == 2048
    with conn(proxy) as s:
        s.sendall(GET + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n")
        assert read_answer(s)[0] == 431


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_flags_set_the_limits_in_every_worker(emulator: EmulatorHandle, workers: int) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
        QCP_USAGE_DB="",
    )
    cmd = [
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--max-header-bytes",
        "2048",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(GET + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n")
            assert read_answer(s)[0] == 431
        r = httpx.get(f"http://127.0.0.1:{port}/runtime/backends", timeout=10)
        assert r.status_code == 200
    finally:
        stop_process(proc)


SMUGGLING = {
    "cl_and_te": b"POST /runtime/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /runtime/backends HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "duplicate_cl": b"POST /runtime/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
    b"Content-Length: 40\r\n\r\n{}",
    "bad_chunk_size": b"POST /runtime/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    "obs_fold": b"GET /runtime/backends HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n folded\r\n\r\n",
    "bare_lf": b"GET /runtime/backends HTTP/1.1\nHost: 127.0.0.1\n\n",
    "te_not_chunked": b"POST /runtime/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n{}",
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_request_smuggling_is_a_json_400_and_nothing_is_forwarded(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle, case: str
) -> None:
    proxy = make_proxy()
    emulator.clear()
    with conn(proxy) as s:
        s.sendall(SMUGGLING[case])
        status, headers, body = read_answer(s)
        assert status == 400, body
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["status"] == 400
        assert closed_by_server(s)  # nothing after it is read as a second request
    assert emulator.api_requests() == []
