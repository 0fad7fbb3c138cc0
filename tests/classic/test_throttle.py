"""Wrong client tokens per source address: 401 for a burst, then 429 with Retry-After; valid tokens
always pass; memory bounded. Unit tests on FailureThrottle, then real servers and sockets."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from proxy.classic import throttle as throttle_mod
from proxy.classic.throttle import FailureThrottle
from proxy.config import load_settings
from proxy.errors import TooManyRequests

from ..conftest import Running

TOKEN = "alice=tok-alice-123456"
GOOD = {"Authorization": "Bearer tok-alice-123456"}


def make(burst: int = 3, window: float = 60.0) -> FailureThrottle:
    return FailureThrottle(load_settings(None, usage_db="", auth_failure_burst=burst, auth_failure_window=window))


def test_burst_then_429_with_retry_after_per_address() -> None:
    t = make(burst=3)
    for _ in range(3):
        t.failed("10.0.0.1")
    with pytest.raises(TooManyRequests) as err:
        t.failed("10.0.0.1")
    assert err.value.status == 429 and 1 <= int(err.value.headers["retry-after"]) <= 60
    t.failed("10.0.0.2")  # another address has its own budget
    assert t.throttled == 1


def test_window_ends_and_the_budget_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(throttle_mod.time, "monotonic", lambda: now[0])
    t = make(burst=1, window=10)
    t.failed("a")
    with pytest.raises(TooManyRequests) as err:
        t.failed("a")
    assert err.value.headers["retry-after"] == "10"
    now[0] += 10.5
    t.failed("a")  # a new window


def test_memory_is_bounded_by_the_address_count() -> None:
    t = FailureThrottle(load_settings(None, usage_db="", auth_failure_burst=1), max_addresses=100)
    for i in range(10_000):
        t.failed(f"2001:db8::{i:x}")
    assert len(t) <= 100


def test_wrong_tokens_are_throttled_and_valid_ones_never(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(client_tokens=[TOKEN], auth_failure_burst=5)
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        statuses = [
            c.get("/runtime/backends", headers={"Authorization": f"Bearer wrong-{i:04d}"}).status_code for i in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
        r = c.get("/runtime/backends", headers={"X-Access-Token": "wrong-token-xyz"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["errors"][0]["code"] == "too_many_auth_failures"
        # Still blocked, but a valid token from the same address passes.
        assert c.get("/runtime/backends", headers=GOOD).status_code == 200
        # A wrong Classic login counts the same.
        r = c.post("/api/users/loginWithToken", json={"apiToken": "nope-nope-nope"})
        assert r.status_code == 429, r.text
    # Another source address is not affected.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=proxy.url, timeout=10, transport=transport) as other:
        assert other.get("/runtime/backends", headers={"Authorization": "Bearer wrong"}).status_code == 401
    text = proxy.app.phaseout.metrics.render()[0].decode()  # /metrics wants the admin token here
    assert 'qcp_refused_total{reason="auth_throttled"} 5.0' in text


def test_missing_token_is_401_and_not_counted(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(client_tokens=[TOKEN], auth_failure_burst=2)
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        assert [c.get("/runtime/backends").status_code for _ in range(5)] == [401] * 5
    assert proxy.app.pipeline.throttle.throttled == 0
