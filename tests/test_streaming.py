"""Bodies stream both ways through the proxy with bounded memory.

The memory tests run the proxy as its own process (`python -m proxy serve`), so that its RSS
(/proc/<pid>/status) is the proxy's alone, not this test process's with the client's buffers.
The upstream is a small ASGI app on loopback that generates and checks the large bodies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import load_settings
from proxy.serving import BackgroundServer, free_port

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/streamtest:instance::"
RESULT_MB = 96  # the benchmark streams 256 MB; this is enough to show the bound
SUBMIT_MB = 50
RSS_BOUND_MB = 32
BLOCK = base64.b64encode(os.urandom(3 * 65536))  # 256 KiB of JSON-safe bytes


def result_chunks(size: int) -> Iterator[bytes]:
    """A job-result-shaped JSON document of exactly `size` bytes, in 256 KiB chunks."""
    head, tail = b'{"results":[{"__value__":"', b'"}]}'
    yield head
    n = size - len(head) - len(tail)
    while n > 0:
        yield BLOCK[: min(n, len(BLOCK))]
        n -= len(BLOCK)
    yield tail


SUBMIT_HEAD = (
    b'{"hub":"ibm-q","group":"open","project":"main","private":false,"program_id":"sampler",'
    b'"backend":"fake_stream","params":{"version":2,"pubs":[[{"__type__":"QuantumCircuit","__value__":"'
)
SUBMIT_FORWARDED_HEAD = (
    b'{"program_id":"sampler","backend":"fake_stream","params":{"version":2,"pubs":'
    b'[[{"__type__":"QuantumCircuit","__value__":"'
)
SUBMIT_TAIL = b'"}]]}}'


def submission_chunks(size: int, head: bytes = SUBMIT_HEAD) -> Iterator[bytes]:
    yield head
    n = size - len(SUBMIT_HEAD) - len(SUBMIT_TAIL)
    while n > 0:
        yield BLOCK[: min(n, len(BLOCK))]
        n -= len(BLOCK)
    yield SUBMIT_TAIL


def forwarded_chunks(size: int, job: dict[str, Any]) -> Iterator[bytes]:
    """What the proxy forwards for `submission_chunks(size)`: classic keys dropped, and the
    exactly-once marker tag (proxy/submissions.py) appended as the last member."""
    m = re.search(rb',"tags":\["(qcp:req:[0-9a-f]{32})"\]\}$', job["tail"])
    assert m, job["tail"]
    chunks = list(submission_chunks(size, SUBMIT_FORWARDED_HEAD))
    chunks[-1] = chunks[-1][:-1] + b',"tags":["' + m.group(1) + b'"]}'
    yield from chunks


class StubUpstream:
    """IAM token endpoint + the few new-API routes these tests use."""

    def __init__(self) -> None:
        self.tokens = ["tok-1"]  # handed out in order; the last one repeats
        self.iam_calls = 0
        self.reject_once: set[str] = set()  # bearer values answered 401 once
        self.jobs: list[dict[str, Any]] = []
        self.disconnects: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}

        async def reply(status: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": data})

        if path == "/identity/token":
            while (await receive()).get("more_body"):
                pass
            token = self.tokens[min(self.iam_calls, len(self.tokens) - 1)]
            self.iam_calls += 1
            await reply(200, {"access_token": token, "expires_in": 3600})
            return
        bearer = headers.get("authorization", "")
        if bearer in self.reject_once:
            self.reject_once.discard(bearer)
            while (await receive()).get("more_body"):
                pass
            await reply(401, {"errors": [{"code": "unauthorized", "message": "token revoked"}]})
            return
        m = re.fullmatch(r"/api/v1/jobs/([^/]+)/results", path)
        if m and method == "GET":
            job = m.group(1)
            if job == "endless":
                while (await receive()).get("more_body"):
                    pass
                await self._endless(receive, send)
                return
            size = int(job.removeprefix("mb")) * 1024 * 1024
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(size).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": hdrs})
            for chunk in result_chunks(size):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/api/v1/jobs" and method == "POST":
            h = hashlib.sha256()
            size = 0
            head = tail = b""
            more = True
            while more:
                msg = await receive()
                chunk = msg.get("body", b"")
                if len(head) < 4096:
                    head += chunk[: 4096 - len(head)]
                h.update(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-256:]
                more = msg.get("more_body", False)
            self.jobs.append({"sha256": h.hexdigest(), "size": size, "head": head, "tail": tail, "headers": headers})
            await reply(200, {"id": f"job-{len(self.jobs)}", "backend": "fake_stream"})
            return
        await reply(404, {"errors": [{"code": "not_found", "message": path}]})

    async def _endless(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        gone = asyncio.ensure_future(receive())
        await send({"type": "http.response.body", "body": b'{"results":"', "more_body": True})
        deadline = time.monotonic() + 30
        while not gone.done() and time.monotonic() < deadline:
            await send({"type": "http.response.body", "body": BLOCK, "more_body": True})
            await asyncio.sleep(0.002)
        self.disconnects.append("endless" if gone.done() else "timeout")
        if not gone.done():
            await send({"type": "http.response.body", "body": b'"}'})


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, StubUpstream]]:
    app = StubUpstream()
    server = BackgroundServer(app, access_log=False).start()
    yield server.url, app
    server.stop()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Peak:
    """Samples a process's RSS every 5 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_kb(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(0.005)

    def __enter__(self) -> Peak:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_kb(self.pid))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1024


@pytest.fixture(scope="module")
def proxy_process(stub: tuple[str, StubUpstream]) -> Iterator[tuple[str, int]]:
    url, _ = stub
    port = free_port()
    env = {
        **os.environ,
        "QCP_API_KEY": "stream-test-key",
        "QCP_SERVICE_CRN": CRN,
        "QCP_UPSTREAM_URL": url + "/api",
        "QCP_IAM_URL": url + "/identity/token",
        "QCP_PORT": str(port),
        "QCP_USAGE_DB": "",
        "QCP_LOG_LEVEL": "warning",
    }
    env.pop("QCP_CONFIG", None)
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=Path(__file__).resolve().parent.parent,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if p.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"proxy did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.05)
        yield base, p.pid
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        log.close()


def _download(client: httpx.Client, url: str) -> tuple[int, int, str]:
    h = hashlib.sha256()
    n = 0
    with client.stream("GET", url) as r:
        for chunk in r.iter_raw(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return r.status_code, n, h.hexdigest()


def _expected(chunks: Iterator[bytes]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


def test_large_result_streams_byte_exact_with_bounded_memory(proxy_process: tuple[str, int]) -> None:
    base, pid = proxy_process
    with httpx.Client(timeout=60, trust_env=False) as c:
        _download(c, base + "/runtime/jobs/mb2/results")  # warm-up: pools, buffers
        with Peak(pid) as peak:
            status, n, digest = _download(c, base + f"/runtime/jobs/mb{RESULT_MB}/results")
    assert status == 200
    assert (n, digest) == _expected(result_chunks(RESULT_MB * 1024 * 1024))
    assert peak.growth_mb < RSS_BOUND_MB, f"proxy RSS grew {peak.growth_mb:.1f} MB for a {RESULT_MB} MB result"


def test_large_submission_streams_rewritten_with_bounded_memory(
    proxy_process: tuple[str, int], stub: tuple[str, StubUpstream]
) -> None:
    base, pid = proxy_process
    _, app = stub
    size = SUBMIT_MB * 1024 * 1024
    with httpx.Client(timeout=120, trust_env=False) as c:
        warm = c.post(base + "/runtime/jobs", content=b"".join(submission_chunks(2 * 1024 * 1024)))
        assert warm.status_code == 200, warm.text
        app.jobs.clear()
        with Peak(pid) as peak:
            r = c.post(
                base + "/runtime/jobs",
                content=submission_chunks(size),
                headers={"content-length": str(size)},  # no Content-Type: legacy SDKs send none
            )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "job-1"
    assert r.json()["hub"] == "ibm-q"  # the Classic answer fix-up still applies
    [job] = app.jobs
    assert job["head"].startswith(SUBMIT_FORWARDED_HEAD)  # hub/group/project/private dropped
    assert (job["size"], job["sha256"]) == _expected(forwarded_chunks(size, job))
    assert job["headers"]["service-crn"] == CRN  # instance chosen from the body's hub/group/project
    assert job["headers"]["content-length"] == str(job["size"])
    assert "transfer-encoding" not in job["headers"]
    assert peak.growth_mb < RSS_BOUND_MB, f"proxy RSS grew {peak.growth_mb:.1f} MB for a {SUBMIT_MB} MB submission"


def test_client_disconnect_mid_body_closes_the_upstream_stream(
    proxy_process: tuple[str, int], stub: tuple[str, StubUpstream]
) -> None:
    base, _ = proxy_process
    _, app = stub
    app.disconnects.clear()
    with httpx.Client(timeout=30, trust_env=False) as c:
        with c.stream("GET", base + "/runtime/jobs/endless/results") as r:
            assert r.status_code == 200
            got = 0
            for chunk in r.iter_raw():
                got += len(chunk)
                if got > 2 * 1024 * 1024:
                    break
    # Leaving the block closed the connection mid-body; the proxy must drop the upstream stream.
    deadline = time.monotonic() + 10
    while not app.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.disconnects == ["endless"]


# ------------------------------------------- in-process proxies: functional checks on big bodies


@pytest.fixture
def make(stub: tuple[str, StubUpstream]) -> Iterator[Any]:
    url, _ = stub
    servers: list[BackgroundServer] = []

    def start(**overrides: Any) -> str:
        settings = load_settings(
            None,
            api_key="stream-test-key",
            service_crn=CRN,
            upstream_url=url + "/api",
            iam_url=url + "/identity/token",
            usage_db="",
            **overrides,
        )
        server = BackgroundServer(create_app(settings), access_log=False).start()
        servers.append(server)
        return server.url

    yield start
    for s in servers:
        s.stop()


def test_oversized_body_is_413_with_or_without_content_length(make: Any, stub: tuple[str, StubUpstream]) -> None:
    _, app = stub
    base = make(max_body_bytes=2 * 1024 * 1024)
    app.jobs.clear()
    body = b"".join(submission_chunks(3 * 1024 * 1024))
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.post(base + "/runtime/jobs", content=body)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = c.post(base + "/runtime/jobs", content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]))
        assert r.status_code == 413
        ok = c.post(base + "/runtime/jobs", content=b"".join(submission_chunks(1536 * 1024)))
        assert ok.status_code == 200  # over the streaming threshold, under the limit
    assert len(app.jobs) == 1


def test_large_malformed_body_is_400_before_anything_is_forwarded(make: Any, stub: tuple[str, StubUpstream]) -> None:
    _, app = stub
    base = make()
    app.jobs.clear()
    body = b"".join(submission_chunks(3 * 1024 * 1024))[:-1]  # missing the final brace
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.post(base + "/runtime/jobs", content=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        bad = body[:1000] + b"\x01" + body[1001:] + b"}"  # a control character deep inside a string
        r = c.post(base + "/runtime/jobs", content=bad)
        assert r.status_code == 400
    assert app.jobs == []


def test_large_submission_of_a_retired_program_is_read_whole_and_checked(
    make: Any, stub: tuple[str, StubUpstream]
) -> None:
    """circuit-runner bodies are translated (proxy/programs/) even when spooled; this one has pubs
    instead of circuits, so it is refused before anything is sent."""
    _, app = stub
    base = make()
    app.jobs.clear()
    body = b"".join(submission_chunks(2 * 1024 * 1024)).replace(b'"sampler"', b'"circuit-runner"')
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.post(base + "/runtime/jobs", content=body)
    assert r.status_code == 400 and "'circuits'" in r.json()["error"]["message"]
    assert app.jobs == []


def test_large_submission_is_replayed_whole_after_a_401(make: Any, stub: tuple[str, StubUpstream]) -> None:
    _, app = stub
    app.tokens, app.iam_calls = ["tok-old", "tok-new"], 0
    try:
        base = make()
        app.jobs.clear()
        app.reject_once = {"Bearer tok-old"}
        size = 3 * 1024 * 1024
        with httpx.Client(timeout=30, trust_env=False) as c:
            r = c.post(base + "/facade/v1/jobs", content=submission_chunks(size), headers={"content-length": str(size)})
        assert r.status_code == 200, r.text
        [job] = app.jobs  # the 401'd attempt is not recorded by the stub
        assert job["headers"]["authorization"] == "Bearer tok-new"
        assert (job["size"], job["sha256"]) == _expected(forwarded_chunks(size, job))
    finally:
        app.tokens, app.reject_once = ["tok-1"], set()
