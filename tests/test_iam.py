"""Token cache policy, with a fake clock and an in-process IAM (narrow unit tests).

The same behaviour through real servers is in test_failures.py.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from proxy.errors import IamError, IamKeyRejected
from proxy.upstream.iam import TokenProvider

KEY = "unit-test-api-key"


class FakeIam:
    def __init__(self, lifetime: int = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.mode = "ok"
        self.delay = 0.0
        self.gate: asyncio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        assert b"apikey=" + KEY.encode() in request.content
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "down":
            return httpx.Response(503, text="unavailable")
        if self.mode == "reject":
            body = {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found."}
            return httpx.Response(400, json=body)
        if self.mode == "garbage":
            return httpx.Response(200, text="<html>")
        return httpx.Response(200, json={"access_token": f"tok-{self.calls}", "expires_in": self.lifetime})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(iam: FakeIam, clock: Clock | None = None) -> TokenProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(iam.handler))
    return TokenProvider(KEY, "http://iam.invalid/identity/token", client=client, clock=clock or Clock())


async def test_cold_start_burst_makes_one_iam_call() -> None:
    iam = FakeIam()
    iam.gate = asyncio.Event()
    tp = make(iam)
    tasks = [asyncio.create_task(tp.get()) for _ in range(64)]
    await asyncio.sleep(0.01)
    iam.gate.set()
    tokens = await asyncio.gather(*tasks)
    assert set(tokens) == {"tok-1"}
    assert iam.calls == 1


async def test_refresh_ahead_at_80_percent_keeps_serving_the_old_token() -> None:
    iam, clock = FakeIam(lifetime=100), Clock()
    tp = make(iam, clock)
    assert await tp.get() == "tok-1"
    clock.now += 79
    assert await tp.get() == "tok-1"
    assert iam.calls == 1
    clock.now += 2  # past 80 %: the next get starts one background refresh and still answers at once
    iam.gate = asyncio.Event()
    results = await asyncio.gather(*(tp.get() for _ in range(10)))
    assert set(results) == {"tok-1"}
    iam.gate.set()
    await asyncio.sleep(0.01)
    assert await tp.get() == "tok-2"
    assert iam.calls == 2


async def test_expired_token_is_never_handed_out() -> None:
    iam, clock = FakeIam(lifetime=100), Clock()
    tp = make(iam, clock)
    await tp.get()
    clock.now += 95  # within the 10 s safety margin of expiry
    iam.mode = "down"
    with pytest.raises(IamError) as info:
        await tp.get()
    assert info.value.status == 503
    assert info.value.headers["retry-after"]


async def test_iam_down_with_a_valid_token_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    iam, clock = FakeIam(lifetime=100), Clock()
    tp = make(iam, clock)
    await tp.get()
    iam.mode = "down"
    clock.now += 85
    with caplog.at_level(logging.ERROR, logger="qiskit_classic_proxy.iam"):
        for _ in range(5):
            assert await tp.get() == "tok-1"
            await asyncio.sleep(0.005)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "IAM failures are logged once per state change"
    assert "still serving" in errors[0].getMessage()


async def test_rejected_key_is_a_502_with_iams_code_and_no_key() -> None:
    iam = FakeIam()
    iam.mode = "reject"
    tp = make(iam)
    with pytest.raises(IamKeyRejected) as info:
        await tp.get()
    err = info.value
    assert err.status == 502
    assert err.extra["iam_error_code"] == "BXNIM0415E"
    assert KEY not in err.render("rid").decode()


async def test_unusable_iam_answer_is_a_503() -> None:
    iam = FakeIam()
    iam.mode = "garbage"
    with pytest.raises(IamError) as info:
        await make(iam).get()
    assert info.value.status == 503


async def test_invalidate_forces_a_new_token_once() -> None:
    iam = FakeIam()
    tp = make(iam)
    old = await tp.get()
    tp.invalidate("some-other-token")
    assert await tp.get() == old
    tp.invalidate(old)
    assert await asyncio.gather(*(tp.get() for _ in range(8))) == ["tok-2"] * 8
    assert iam.calls == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_fetch() -> None:
    iam = FakeIam()
    iam.delay = 0.05
    tp = make(iam)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(tp.get(), 0.01)
    assert await tp.get() == "tok-1"
    assert iam.calls == 1


def test_token_repr_hides_the_value() -> None:
    from proxy.upstream.iam import Token

    assert "secret" not in repr(Token("secret-bearer", 0, 100))


async def test_cached_is_get_without_awaiting() -> None:
    """The request path's shortcut: None when nothing usable is cached, the token while it is good,
    and past 80 % it starts the one background refresh as get() does."""
    iam, clock = FakeIam(lifetime=100), Clock()
    tp = make(iam, clock)
    assert tp.cached() is None and iam.calls == 0
    assert await tp.get() == "tok-1"
    assert tp.cached() == "tok-1"
    clock.now += 81
    iam.gate = asyncio.Event()
    assert [tp.cached() for _ in range(5)] == ["tok-1"] * 5
    iam.gate.set()
    await asyncio.sleep(0.01)
    assert tp.cached() == "tok-2" and iam.calls == 2
    tp.invalidate("tok-2")
    assert tp.cached() is None and tp.current() is None
    clock.now += 1000
    assert tp.cached() is None


async def test_a_token_unusable_on_arrival_is_not_handed_out_again() -> None:
    """A lifetime shorter than the IAM call took: the caller that waited gets it, nobody else."""
    iam, clock = FakeIam(lifetime=5), Clock()
    tp = make(iam, clock)
    iam.gate = asyncio.Event()
    task = asyncio.create_task(tp.get())
    await asyncio.sleep(0.01)
    clock.now += 6
    iam.gate.set()
    assert await task == "tok-1"
    assert tp.current() is None and not tp.ready
    assert await tp.get() == "tok-2"
