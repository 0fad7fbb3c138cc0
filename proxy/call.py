"""The per-request context every stage reads; built once by the pipeline, passed forward only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import fastjson

if TYPE_CHECKING:
    from .classic.routes import Route


@dataclass
class Reply:
    """An answer the proxy gives itself (local routes, fix-ups, errors)."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes | None = b"application/json"

    @classmethod
    def json(cls, doc: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        return cls(status, fastjson.dumps(doc), headers or [])


@dataclass
class Call:
    request_id: str
    method: str
    path: str  # normalized legacy path
    route: Route | None = None
    params: dict[str, str] = field(default_factory=dict)
    query: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, first value
    caller: str = "anonymous"  # client-token name, or the login name
    sdk: str = "other"  # e.g. "qiskit_ibm_runtime-0.40.1"
    sdk_version: tuple[int, ...] = ()
    compat_results: bool = False  # answer results in the shape every runtime version decodes
    authenticated: bool = False
    instance: str = ""  # legacy hub/group/project
    crn: str = ""
    instance_explicit: bool = False  # named by the caller (or remembered), not defaulted
    base_url: str = ""  # how the caller reached us: scheme://host[:port]
    started: float = field(default_factory=time.perf_counter)
    upstream: str = "-"  # "METHOD /v1/..." for the access log
    status: int = 0
    action: str = "-"
    seen_ids: list[str] = field(default_factory=list)  # job/session ids an answer named (instance memory)
    upstream_error: str | None = None  # how the new API failed (an error code, "http_5xx"), for metrics
    program: Any = None  # programs.Translation: this job (submitted or read) was translated from V1
    client: str = ""  # the caller's address (wrong-token throttling)

    @property
    def is_legacy_sdk(self) -> bool:
        """Legacy SDKs identify themselves; plain curl/dashboards do not."""
        return self.sdk != "other" or "x-access-token" in self.headers
