"""proxy.asgi.HangupWatch through real servers: a caller who hangs up on a slow GET gets its
upstream request cancelled (the emulator sees the proxy go away), quick answers are untouched."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

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
