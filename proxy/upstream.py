"""Forwarding to the new API: one pooled httpx client, errors mapped to clear JSON answers.

The transport is swappable (`transport=`): httpx's default pool, an aiohttp-backed one
(`proxy.transport`), or `httpx.MockTransport` in unit tests. Nothing is retried here: the only
replay (after a 401) is decided by the caller, which knows the request never ran.
"""

from __future__ import annotations

import http.cookiejar
import os
from collections.abc import AsyncIterable
from typing import Literal

import httpx

from .config import Settings
from .errors import OutcomeUnknown, Overloaded, UpstreamError, UpstreamTimeout

#: RFC 9110 §7.6.1 connection-specific headers, plus ones we never pass either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "server", "date"}
#: Upstream HTTP transport: "aiohttp" (proxy.transport, the default: see BENCHMARKS.md) or "httpx"
#: (httpcore's pool). Meant to become a setting (`transport`); until then QCP_TRANSPORT.
TRANSPORT = os.environ.get("QCP_TRANSPORT", "aiohttp").strip().lower()


def default_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    if TRANSPORT == "httpx":
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            # Below uvicorn's and most servers' 5 s idle timeout: a pooled connection the server
            # already closed would make a POST's outcome ambiguous.
            keepalive_expiry=4.0,
        )
        return httpx.AsyncHTTPTransport(limits=limits, retries=0)
    from .transport import AiohttpTransport

    return AiohttpTransport(max_connections=settings.max_connections, keepalive_expiry=4.0)


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that stays empty: a shared client must never carry one caller's cookies to another."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: object, request: object) -> None:  # type: ignore[override]
        return None


def response_headers(headers: httpx.Headers, drop_length: bool = False) -> list[tuple[bytes, bytes]]:
    """Upstream headers minus hop-by-hop ones, including any named in Connection."""
    named = {t.strip().lower() for v in headers.get_list("connection") for t in v.split(",")}
    out = []
    for k, v in headers.raw:
        name = k.decode("latin-1").lower()
        if name in RESPONSE_DROP or name in named:
            continue
        if drop_length and name in ("content-length", "content-encoding"):
            continue
        out.append((name.encode("latin-1"), v))
    return out


class Upstream:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = settings.effective_upstream_url.rstrip("/")
        self._host = httpx.URL(self.base).host
        default = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        )
        self.timeouts: dict[str, httpx.Timeout] = {
            "default": default,
            "submit": httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.submit_timeout,
                write=settings.write_timeout,
                pool=settings.pool_timeout,
            ),
        }
        self.client = httpx.AsyncClient(
            transport=transport or default_transport(settings),
            timeout=default,
            trust_env=False,
            follow_redirects=False,
            cookies=httpx.Cookies(_NoCookies()),
        )

    @property
    def host(self) -> str:
        return self._host

    async def open(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        timeout: Literal["default", "submit"] = "default",
        creates: bool = False,
        request_id: str = "",
    ) -> httpx.Response:
        """Send and return the response with its body still unread (stream it or read it)."""
        url = self.base + path + ("?" + query.decode("latin-1") if query else "")
        request = self.client.build_request(
            method, url, headers=headers, content=body, timeout=self.timeouts[timeout]
        )
        where = f"{self.host} ({method} {path}, request {request_id})"
        try:
            return await self.client.send(request, stream=True)
        except httpx.PoolTimeout:
            raise Overloaded(
                f"too many requests in flight to the upstream; retry shortly (request {request_id})",
                headers={"retry-after": "1"},
            ) from None
        except httpx.ConnectTimeout:
            raise UpstreamTimeout(f"connecting to the new API timed out: {where}") from None
        except (httpx.ConnectError, httpx.WriteError, httpx.WriteTimeout, httpx.UnsupportedProtocol) as exc:
            # The request did not get through whole: nothing ran upstream, a retry is safe.
            raise UpstreamError(f"new API unreachable ({type(exc).__name__}): {where}") from None
        except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            if creates:
                raise OutcomeUnknown(
                    f"the new API received the request but gave no answer ({type(exc).__name__}): "
                    f"{where}. It may have been created: list your jobs/sessions before resubmitting."
                ) from None
            if isinstance(exc, httpx.ReadTimeout):
                raise UpstreamTimeout(f"the new API did not answer in time: {where}") from None
            raise UpstreamError(f"the new API dropped the connection ({type(exc).__name__}): {where}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream request failed ({type(exc).__name__}): {where}") from None

    async def aclose(self) -> None:
        await self.client.aclose()
