"""IAM lifecycle and upstream failures through real servers: proxy -> emulator with faults.

Every case checks the caller's answer (status, JSON code), that it came within the configured
timeouts, and that nothing was sent twice.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, EmulatorConfig

from .conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy

JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}


@pytest.fixture
def stack() -> Iterator[Callable[..., tuple[EmulatorHandle, Running]]]:
    """A fresh emulator + proxy per test (faults and token state never leak between tests)."""
    started: list[Any] = []

    def make(emulator_config: EmulatorConfig | None = None, **overrides: Any) -> tuple[EmulatorHandle, Running]:
        emu = start_emulator(emulator_config)
        started.append(emu)
        settings = proxy_settings(emu.url, **overrides)
        proxy = start_proxy(settings)
        started.append(proxy)
        # Let the start-up token prefetch land, so each test decides the token state itself.
        if not overrides.get("upstream_url"):
            wait_for(lambda: proxy.app.tokens is not None and proxy.app.tokens.ready)
        return emu, proxy

    yield make
    for s in reversed(started):
        s.server.stop()


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ IAM


def test_cold_start_burst_of_64_makes_exactly_one_iam_call(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    # The proxy prefetches a token at start-up: let that finish, then drop the token and make IAM
    # slow, so the whole burst arrives while no valid token exists.
    wait_for(lambda: proxy.app.tokens is not None and proxy.app.tokens.ready)
    emu.state.set_faults(iam_mode="slow", iam_delay=0.5, iam_times=1)
    proxy.app.tokens.invalidate(proxy.app.tokens.current().value)
    calls_before = emu.state.iam_calls
    with httpx.Client(base_url=proxy.url, timeout=20, limits=httpx.Limits(max_connections=64)) as c:
        with ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(lambda _: c.get("/runtime/backends").status_code, range(64)))
    assert statuses == [200] * 64
    assert emu.state.iam_calls - calls_before == 1


def test_short_lived_tokens_are_renewed_before_expiry_with_zero_failures(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(EmulatorConfig(token_ttl=6))
    failures, total = 0, 0
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        while time.monotonic() < deadline:
            r = c.get("/runtime/jobs", params={"limit": 1})
            total += 1
            failures += r.status_code != 200
            time.sleep(0.02)
    assert total > 100
    assert failures == 0
    # 6 s tokens renewed at 80 % (4.8 s): at least 3 exchanges in 15 s, and never a 401 upstream.
    assert emu.state.iam_calls >= 3
    assert all(r.get("status", 200) != 401 for r in emu.api_requests())


def test_one_upstream_401_is_replayed_with_a_new_token(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        assert c.get("/runtime/backends").status_code == 200
        calls = emu.state.iam_calls
        emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "status", "status": 401, "times": 1}])
        emu.clear()
        r = c.get("/runtime/backends")
    assert r.status_code == 200
    assert "fake_manila" in r.json()["devices"]
    reqs = emu.api_requests()
    assert len(reqs) == 2
    assert reqs[0]["headers"]["authorization"] != reqs[1]["headers"]["authorization"]
    assert emu.state.iam_calls == calls + 1


def test_a_second_401_goes_back_as_is(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "status", "status": 401, "times": 2}])
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["message"]
    assert len(emu.api_requests()) == 2


def test_job_submission_401_replay_creates_one_job(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "status", "status": 401, "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=10)
    assert r.status_code in (200, 201), r.text
    assert sum(emu.state.state()["jobs"].values()) == 1
    assert sum(1 for q in emu.api_requests() if q["method"] == "POST") == 2


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("down", 503, "iam_unavailable"), ("reject", 502, "iam_api_key_rejected")],
)
def test_iam_failure_without_a_valid_token(stack: Callable[..., Any], mode: str, status: int, code: str) -> None:
    emu, proxy = stack(EmulatorConfig(token_ttl=3600))
    emu.state.set_faults(iam_mode=mode)
    tok = proxy.app.tokens.current()
    if tok is not None:
        proxy.app.tokens.invalidate(tok.value)
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    assert r.status_code == status
    body = r.json()
    assert body["errors"][0]["code"] == code
    assert DEMO_API_KEY not in r.text
    if status == 503:
        assert int(r.headers["retry-after"]) > 0
    else:
        assert body["iam_error_code"] == "BXNIM0415E"
    assert emu.api_requests() == []
    ready = httpx.get(proxy.url + "/readyz", timeout=15)
    assert ready.status_code == 503


def test_slow_iam_answers_503_within_the_iam_timeout(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(iam_timeout=1.0)
    emu.state.set_faults(iam_mode="slow", iam_delay=20)
    tok = proxy.app.tokens.current()
    if tok is not None:
        proxy.app.tokens.invalidate(tok.value)
    t0 = time.monotonic()
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    assert r.status_code == 503
    assert r.json()["errors"][0]["code"] == "iam_unavailable"
    assert time.monotonic() - t0 < 6  # iam_timeout is 1 s; IAM would take 20 s


def test_iam_down_while_token_valid_keeps_serving(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        assert c.get("/runtime/backends").status_code == 200
        emu.state.set_faults(iam_mode="down")
        assert [c.get("/runtime/backends").status_code for _ in range(5)] == [200] * 5
        assert c.get("/readyz").status_code == 200


# ------------------------------------------------------------------------------------------- upstream


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_refusing_connections_is_502(stack: Callable[..., Any]) -> None:
    emu, _ = stack()
    port = closed_port()
    proxy = start_proxy(proxy_settings(emu.url, upstream_url=f"http://127.0.0.1:{port}/api"))
    try:
        t0 = time.monotonic()
        r = httpx.get(proxy.url + "/runtime/backends", headers={"X-Request-ID": "rid-502"}, timeout=10)
        assert r.status_code == 502
        body = r.json()
        assert body["errors"][0]["code"] == "upstream_unreachable"
        assert "127.0.0.1" in body["errors"][0]["message"] and "rid-502" in body["errors"][0]["message"]
        assert time.monotonic() - t0 < 5
    finally:
        proxy.server.stop()


def test_hanging_upstream_is_504_within_the_read_timeout(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(read_timeout=1.0)
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "hang", "delay": 10, "times": 1}])
    t0 = time.monotonic()
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert r.json()["errors"][0]["code"] == "upstream_timeout"
    assert 0.9 < elapsed < 3


def test_upstream_dropping_a_read_twice_is_502(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    # A GET is retried once (proxy/upstream/client.py): it takes two drops to fail it.
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "drop", "times": 2}])
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    assert r.status_code == 502
    assert r.json()["errors"][0]["code"] == "upstream_unreachable"
    assert len([q for q in emu.api_requests() if q["path"] == "/api/v1/backends"]) == 2


def test_get_dropped_once_before_any_answer_is_retried_once(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "drop", "times": 1}])
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)
    assert r.status_code == 200
    assert len([q for q in emu.api_requests() if q["path"] == "/api/v1/backends"]) == 2
    assert proxy.app.upstream.retries == 1
    assert "qcp_upstream_retries_total 1.0" in proxy.app.phaseout.metrics.render()[0].decode()


def test_delete_dropped_before_any_answer_is_not_retried(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    job = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=10).json()["id"]
    emu.state.set_faults(add_rules=[{"match": "DELETE /v1/jobs/*", "action": "drop", "times": 1}])
    r = httpx.delete(proxy.url + f"/runtime/jobs/{job}", timeout=10)
    assert r.status_code == 502
    assert len([q for q in emu.api_requests() if q["method"] == "DELETE"]) == 1
    assert proxy.app.upstream.retries == 0


def test_dropped_job_submission_is_not_sent_twice_and_the_caller_gets_the_job(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=10)
    # Found again under its marker tag (tests/test_submissions.py has the rest).
    assert r.status_code == 200
    posts = [q for q in emu.api_requests() if q["method"] == "POST"]
    assert len(posts) == 1  # the emulator did create it; the proxy did not send it again
    listed = httpx.get(proxy.url + "/runtime/jobs", timeout=10).json()
    assert listed["count"] == 1 and listed["jobs"][0]["id"] == r.json()["id"]


def test_timed_out_job_submission_is_outcome_unknown(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(submit_timeout=1.0)
    emu.state.set_faults(add_rules=[{"match": "POST /v1/sessions", "action": "hang", "delay": 5, "times": 1}])
    r = httpx.post(proxy.url + "/runtime/sessions", json={"backend": "fake_manila"}, timeout=10)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "outcome_unknown"


def test_truncated_streamed_body_aborts_the_answer(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    job = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=10).json()["id"]
    for _ in range(5):
        httpx.get(proxy.url + f"/runtime/jobs/{job}", timeout=10)
    emu.state.set_faults(add_rules=[{"match": "GET /v1/jobs/*/results", "action": "truncate", "times": 1}])
    # The status line is already out when the body breaks: the caller must see a broken body,
    # never a silently short one.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(proxy.url + f"/runtime/jobs/{job}/results", timeout=10)


def test_truncated_buffered_answer_is_502(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "truncate", "times": 1}])
    r = httpx.get(proxy.url + "/runtime/backends", timeout=10)  # /backends is reshaped, so buffered
    assert r.status_code == 502
    assert r.json()["errors"][0]["code"] == "upstream_unreachable"


def test_upstream_connection_reset_mid_stream_does_not_break_later_requests(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "drop", "times": 6}])
    with httpx.Client(base_url=proxy.url, timeout=10) as c:  # two drops per request (one retry)
        assert [c.get("/runtime/backends").status_code for _ in range(3)] == [502] * 3
        assert c.get("/runtime/backends").status_code == 200


def test_no_secret_in_any_failure_answer(stack: Callable[..., Any], captured_logs: Any) -> None:
    emu, proxy = stack(read_timeout=0.5)
    emu.state.set_faults(
        add_rules=[
            {"match": "GET /v1/backends", "action": "drop", "times": 1},
            {"match": "GET /v1/jobs", "action": "hang", "delay": 3, "times": 1},
        ]
    )
    texts = []
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        for path in ("/runtime/backends", "/runtime/jobs"):
            r = c.get(path)
            texts.append(r.text)
        emu.state.set_faults(iam_mode="reject")
        proxy.app.tokens.invalidate(proxy.app.tokens.current().value)
        texts.append(c.get("/runtime/backends").text)
    everything = "".join(texts) + captured_logs.getvalue()
    assert DEMO_API_KEY not in everything
    assert "Bearer ey" not in everything
