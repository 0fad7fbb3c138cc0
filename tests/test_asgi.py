"""proxy.asgi.HangupWatch through real servers: a caller who hangs up on a slow GET gets its
upstream request cancelled (the emulator sees the proxy go away), quick answers are untouched."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
import pytest

from proxy.asgi import _SWEEPS, HangupWatch

from .conftest import EmulatorHandle, Running


def outcome(emulator: EmulatorHandle, path: str) -> str | None:
    entries = [q for q in emulator.api_requests() if q["path"] == path]
    return entries[-1].get("outcome") if entries else None


def test_caller_hanging_up_on_a_slow_get_cancels_the_upstream_request(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle
) -> None:
    proxy = make_proxy(read_timeout=30)
    emulator.clear()
    emulator.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "hang", "delay": 25, "times": 1}])
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(proxy.url + "/runtime/backends", timeout=1.5)  # then the client closes
        for _ in range(100):  # bounded: 10 s, far below the 25 s hang and the 30 s read timeout
            if outcome(emulator, "/api/v1/backends") == "client_disconnected":
                break
            time.sleep(0.1)
        assert outcome(emulator, "/api/v1/backends") == "client_disconnected"
        # The proxy is fine afterwards.
        assert httpx.get(proxy.url + "/runtime/backends", timeout=10).status_code == 200
    finally:
        emulator.state.clear_faults()


def test_slow_get_whose_caller_waits_is_answered(make_proxy: Callable[..., Running], emulator: EmulatorHandle) -> None:
    proxy = make_proxy()
    emulator.state.set_faults(add_rules=[{"match": "GET /v1/backends", "action": "hang", "delay": 1.5, "times": 1}])
    try:
        assert httpx.get(proxy.url + "/runtime/backends", timeout=10).status_code == 200
    finally:
        emulator.state.clear_faults()


# -- the sweep that arms the watches (narrow unit tests: one event loop, no server) -----------------


def test_hangup_watches_share_one_timer_and_only_waiting_ones_are_armed() -> None:
    disconnected = asyncio.Event

    async def main() -> tuple[int, bool, bool, bool]:
        gone = disconnected()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        loop = asyncio.get_running_loop()
        quick = [HangupWatch(receive, 0.05) for _ in range(50)]
        sweeps = len([s for lp, s in _SWEEPS.items() if lp is loop])
        timer = _SWEEPS[loop].timer
        for w in quick:
            w.stop()  # answered at once: never armed
        slow = asyncio.ensure_future(asyncio.sleep(10))
        # A watch made inside the slow task, so that its cancel lands there.
        watch_box: list[HangupWatch] = []

        async def waiting() -> None:
            watch_box.append(HangupWatch(receive, 0.05))
            await slow

        task = asyncio.ensure_future(waiting())
        await asyncio.sleep(0.2)  # past `after`: the sweep armed the slow one
        gone.set()  # the caller hangs up
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        fired = watch_box[0].fired
        watch_box[0].stop()
        await asyncio.sleep(0.1)
        return sweeps, timer is not None, fired, any(w._watcher is not None for w in quick) or loop in _SWEEPS

    sweeps, had_timer, fired, leftovers = asyncio.run(main())
    assert sweeps == 1 and had_timer  # 50 watches, one sweep with one timer
    assert fired  # the waiting one was armed and cancelled its task on the hang-up
    assert not leftovers  # no stopped watch was armed; the sweep went away with the last watch
