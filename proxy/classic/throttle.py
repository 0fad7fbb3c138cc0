"""Throttling of wrong client tokens per source address: 429 with Retry-After after a burst.

A `--host 0.0.0.0` gateway answered 300 wrong tokens in 0.2 s. Each address may fail
`auth_failure_burst` times per `auth_failure_window` s (a fixed window from its first failure);
after that its wrong tokens get 429 until the window ends. A valid token is never refused, so
callers sharing an address (NAT) with a guesser keep working; the throttle bounds the guessing
rate of wrong answers, the log and the metric noise — token entropy does the rest (SECURITY.md).
Memory is bounded: at most `MAX_ADDRESSES` addresses are tracked (least recently failed go first).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from cachetools import TTLCache

from ..config import Settings
from ..errors import TooManyRequests

#: Addresses tracked at once; beyond this the least recently failing are forgotten.
MAX_ADDRESSES = 10_000


class FailureThrottle:
    """Counts wrong client tokens per address; `failed(addr)` raises 429 once over the burst."""

    def __init__(self, settings: Settings, max_addresses: int = MAX_ADDRESSES) -> None:
        self.burst = settings.auth_failure_burst
        self.window = settings.auth_failure_window
        #: address -> [window start (monotonic), failures in the window]
        self._failures: TTLCache[str, list[float]] = TTLCache(maxsize=max_addresses, ttl=self.window)
        self.throttled = 0
        self.on_throttle: Callable[[str], None] | None = None

    def failed(self, address: str) -> None:
        """Record one wrong token from `address`; raise TooManyRequests when over the burst."""
        now = time.monotonic()
        entry = self._failures.get(address)
        if entry is None or now - entry[0] >= self.window:
            entry = [now, 0.0]
        entry[1] += 1
        self._failures[address] = entry
        if entry[1] > self.burst:
            self.throttled += 1
            if self.on_throttle is not None:
                self.on_throttle("auth_throttled")
            retry = max(1, math.ceil(entry[0] + self.window - now))
            raise TooManyRequests(
                f"too many wrong client tokens from this address; retry in {retry} s "
                "(QCP_AUTH_FAILURE_BURST per QCP_AUTH_FAILURE_WINDOW)",
                code="too_many_auth_failures",
                headers={"retry-after": str(retry)},
            )

    def __len__(self) -> int:
        return len(self._failures)
