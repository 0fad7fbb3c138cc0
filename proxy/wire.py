"""The caller-facing wire: the limits an edge proxy has, in the proxy's error shape.

uvicorn (0.55) has `limit_concurrency` (a plain-text 503) and `timeout_keep_alive`, but no limit
on the request head and no header read timeout: httptools buffers a header of any size, and a
client trickling one header line a second holds its connection forever (slowloris). Like nginx
(`large_client_header_buffers`, `client_header_timeout`) and Envoy (`max_request_headers_kb`,
`max_headers_count`, `request_headers_timeout`) the caller-facing protocol (`proxy/http1.py`,
the proxy's own HTTP/1.1 server, hand-written for the hot path) enforces `WireLimits`:

- it counts the bytes of an unfinished head *before* the parser buffers more, and answers 431 as
  soon as it passes `max_header_bytes` (so 40 callers with 8 MB headers cost 40 x 32 KiB);
- it answers 431 for more than `max_header_count` fields, and 400 for a Transfer-Encoding other
  than plain `chunked` (stricter proxies refuse `identity, chunked` and friends);
- it closes a connection whose head is not complete `header_timeout` s after it opened (or after
  the first byte of the next keep-alive request);
- it answers 503 with Retry-After above `max_client_connections` open connections.

Refusals are JSON in the proxy's error shape and counted (`WireLimits.refused`, and the
`qcp_refused` metric). The app names its limits with a `wire` attribute (`proxy.app.ProxyApp`);
any other app gets the defaults.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .errors import MORE_INFO
from .http1 import Http1Protocol


@dataclass
class WireLimits:
    """Limits of one server and what they refused (reason -> count)."""

    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    max_client_connections: int = 1000
    refused: Counter[str] = field(default_factory=Counter)
    on_refuse: Callable[[str], None] | None = None

    @classmethod
    def from_settings(cls, s: Settings, on_refuse: Callable[[str], None] | None = None) -> WireLimits:
        return cls(
            s.max_header_bytes, s.max_header_count, s.header_timeout, s.max_client_connections, on_refuse=on_refuse
        )

    def count(self, reason: str) -> None:
        self.refused[reason] += 1
        if self.on_refuse is not None:
            self.on_refuse(reason)


def error_body(status: int, code: str, message: str) -> bytes:
    """The proxy's JSON error shape (`proxy.errors.ProxyError.body`), for answers given on the wire."""
    err = {"code": code, "message": message, "more_info": MORE_INFO}
    doc = {"errors": [err], "status_code": status, "error": {"code": code, "message": message, "status": status}}
    return json.dumps(doc, separators=(",", ":")).encode()


def limits_of(config: Any) -> WireLimits:
    """The served app's `wire` limits (through uvicorn's middleware wrappers), cached on the config."""
    limits = getattr(config, "_qcp_wire", None)
    if limits is None:
        app = config.loaded_app
        for _ in range(8):
            if isinstance(getattr(app, "wire", None), WireLimits):
                limits = app.wire
                break
            app = getattr(app, "app", None)
        limits = limits or WireLimits()
        config._qcp_wire = limits
    return limits


class CallerProtocol(Http1Protocol):
    """The proxy's HTTP/1.1 protocol with the served app's `WireLimits` and JSON refusals."""

    limits_for = staticmethod(limits_of)
    error_body = staticmethod(error_body)
    error_content_type = b"application/json"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keywords for the caller-facing server (serve, demo, tests)."""
    return {"http": CallerProtocol, "timeout_keep_alive": settings.keepalive_timeout}


__all__ = ["CallerProtocol", "WireLimits", "error_body", "limits_of", "server_options"]
