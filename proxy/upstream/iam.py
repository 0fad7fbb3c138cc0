"""IAM bearer tokens: exchanged from the API key, cached, renewed before they expire.

Policy (mirrors IBM's own SDK, ibm-cloud-sdk-core): renew at 80 % of the token's lifetime, in
the background, while requests keep using the still-valid token; a token is unusable 10 s before
it expires. Only one IAM call is ever in flight (single-flight), however many requests wait.
Failures are logged once per state change, never with the key.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import IamError, IamKeyRejected

log = logging.getLogger("qiskit_classic_proxy.iam")

GRANT_TYPE = "urn:ibm:params:oauth:grant-type:apikey"
REFRESH_AT = 0.8
EXPIRY_MARGIN = 10.0
RETRY_AFTER = 5


@dataclass(frozen=True)
class Token:
    value: str
    obtained: float  # monotonic
    lifetime: float  # seconds

    @property
    def refresh_at(self) -> float:
        return self.obtained + REFRESH_AT * self.lifetime

    @property
    def expires_at(self) -> float:
        return self.obtained + self.lifetime - min(EXPIRY_MARGIN, 0.1 * self.lifetime)

    def __repr__(self) -> str:  # never print the token
        return f"Token(lifetime={self.lifetime:.0f}s)"


class TokenProvider:
    """Hands out a valid bearer; `get()` is what the request path awaits."""

    def __init__(
        self,
        api_key: str,
        iam_url: str,
        *,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_key = api_key
        self._iam_url = iam_url
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)
        self._owns_client = client is None
        # The cached token and its two instants (monotonic), read by every request: `get()` is
        # two attribute reads and a clock comparison while the token is good.
        self._token: Token | None = None
        self._refresh_at = 0.0
        self._expires_at = -math.inf  # unusable from then on (nothing cached: always)
        self._inflight: asyncio.Task[Token] | None = None
        self._state = "ok"
        self.fetches = 0
        self.failures = 0
        self.last_error: IamError | None = None
        self.on_event: Callable[[str], None] | None = None  # metrics hook: "refresh" / "failure"

    # -- public -----------------------------------------------------------------------------
    def current(self) -> Token | None:
        """The cached token while it is usable, else None."""
        return self._token if self._clock() < self._expires_at else None

    @property
    def ready(self) -> bool:
        return self.current() is not None

    def cached(self) -> str | None:
        """`get()` without awaiting when the cached token is usable (None: await `get()`);
        past the refresh point it starts the background renewal, as `get()` does."""
        now = self._clock()
        if now < self._expires_at:
            if now >= self._refresh_at:
                self._start_refresh()  # renew in the background; this one is still good
            return self._token.value  # type: ignore[union-attr]
        return None

    async def get(self) -> str:
        value = self.cached()
        return value if value is not None else (await self._refresh()).value

    def invalidate(self, value: str) -> None:
        """The upstream said 401 with this token: never hand it out again."""
        token = self.current()
        if token is not None and token.value == value:
            self._store(None)

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
        if self._owns_client:
            await self._client.aclose()

    # -- internals ---------------------------------------------------------------------------
    def _start_refresh(self) -> asyncio.Task[Token]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(_consume)
        return self._inflight

    async def _refresh(self) -> Token:
        # shield: a caller that gives up must not cancel the fetch others wait for
        return await asyncio.shield(self._start_refresh())

    async def _fetch(self) -> Token:
        self.fetches += 1
        started = self._clock()
        try:
            resp = await self._client.post(
                self._iam_url,
                data={"grant_type": GRANT_TYPE, "apikey": self._api_key, "response_type": "cloud_iam"},
                headers={"Accept": "application/json", "User-Agent": "qiskit-classic-proxy"},
            )
        except httpx.TimeoutException:
            raise self._fail(IamError("IAM did not answer in time", headers=_retry())) from None
        except httpx.ProxyError as exc:  # the outbound proxy refused the tunnel (407, 403...)
            raise self._fail(IamError(f"IAM unreachable: {exc}", headers=_retry())) from None
        except httpx.HTTPError as exc:
            raise self._fail(IamError(f"IAM unreachable ({type(exc).__name__})", headers=_retry())) from None
        if resp.status_code in (400, 401, 403):
            code = _iam_code(resp)
            raise self._fail(
                IamKeyRejected(
                    f"IAM rejected the configured API key (status {resp.status_code}, {code}); "
                    "check QCP_API_KEY",
                    extra={"iam_error_code": code},
                )
            )
        if resp.status_code != 200:
            raise self._fail(IamError(f"IAM answered {resp.status_code}", headers=_retry()))
        try:
            doc = resp.json()
            value = doc["access_token"]
            lifetime = _lifetime(doc)
            if not isinstance(value, str) or not value:
                raise ValueError("empty access_token")
        except (ValueError, KeyError, TypeError):
            raise self._fail(IamError("IAM answered without a usable token", headers=_retry())) from None
        token = Token(value=value, obtained=started, lifetime=lifetime)
        self._store(token)
        if self._state != "ok":
            log.warning("IAM token obtained again after failures")
        self._state = "ok"
        self.last_error = None
        if self.on_event:
            self.on_event("refresh")
        return token

    def _store(self, token: Token | None) -> None:
        self._token = token
        self._refresh_at = token.refresh_at if token is not None else 0.0
        self._expires_at = token.expires_at if token is not None else -math.inf

    def _fail(self, err: IamError) -> IamError:
        self.failures += 1
        self.last_error = err
        state = err.code
        if state != self._state:  # once per state change, never per request
            still = " (still serving with the cached token)" if self.current() else ""
            log.error("IAM token exchange failed: %s%s", err.message, still)
            self._state = state
        if self.on_event:
            self.on_event("failure")
        return err


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a background refresh failure is logged in _fail, not re-raised here


def _retry() -> dict[str, str]:
    return {"retry-after": str(RETRY_AFTER)}


def _lifetime(doc: dict[str, Any]) -> float:
    if isinstance(doc.get("expires_in"), (int, float)) and doc["expires_in"] > 0:
        return float(doc["expires_in"])
    if isinstance(doc.get("expiration"), (int, float)):
        remaining = float(doc["expiration"]) - time.time()
        if remaining > 0:
            return remaining
    raise ValueError("no expiry")


def _iam_code(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        return str(doc.get("errorCode") or doc.get("code") or "unknown")[:40]
    except ValueError:
        return "unknown"
