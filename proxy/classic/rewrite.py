"""Query and body rewrites: small, declarative operations that route rows compose.

Each op is a frozen value with `apply`; a row lists them and they run in order. The ops never
see secrets: identity headers are built by upstream/client.py, not here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from .. import fastjson
from ..errors import BadRequest

if TYPE_CHECKING:
    from .routes import Route

Query = list[tuple[str, str]]

# ---------------------------------------------------------------------------------- query ops


@dataclass(frozen=True)
class DropQuery:
    names: tuple[str, ...]

    def apply(self, query: Query) -> Query:
        return [(k, v) for k, v in query if k not in self.names]

    def describe(self) -> str:
        return "drop ?" + ",".join(self.names)


@dataclass(frozen=True)
class DefaultQuery:
    name: str
    value: str

    def apply(self, query: Query) -> Query:
        if any(k == self.name for k, _ in query):
            return query
        return [*query, (self.name, self.value)]

    def describe(self) -> str:
        return f"default ?{self.name}={self.value}"


@dataclass(frozen=True)
class LowerBoolQuery:
    """Python SDKs send `exclude_params=False` (str(bool)); the new API wants `false`."""

    names: tuple[str, ...]

    def apply(self, query: Query) -> Query:
        return [(k, v.lower() if k in self.names and v in ("True", "False") else v) for k, v in query]

    def describe(self) -> str:
        return "lower-case booleans ?" + ",".join(self.names)


# ----------------------------------------------------------------------------------- body ops


@dataclass(frozen=True)
class DropKeys:
    names: tuple[str, ...]

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        for n in self.names:
            body.pop(n, None)
        return body

    def describe(self) -> str:
        return "drop " + ",".join(self.names)


@dataclass(frozen=True)
class RenameKey:
    old: str
    new: str

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.old in body:
            value = body.pop(self.old)
            body.setdefault(self.new, value)
        return body

    def describe(self) -> str:
        return f"rename {self.old}->{self.new}"


@dataclass(frozen=True)
class DefaultKey:
    name: str
    value: Any

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get(self.name) is None:
            body[self.name] = self.value
        return body

    def describe(self) -> str:
        return f"default {self.name}={self.value!r}"


_TTL_RE = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string like "1h", "90m", "1h30m", "600" (the provider sends raw strings)."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return int(s)
        m = _TTL_RE.match(s)
        if m and any(m.groups()):
            h, mi, se = (int(g) if g else 0 for g in m.groups())
            return h * 3600 + mi * 60 + se
    raise ValueError(f"not a duration: {value!r}")


@dataclass(frozen=True)
class DurationKey:
    name: str

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get(self.name) is not None:
            try:
                body[self.name] = parse_duration(body[self.name])
            except ValueError:
                raise BadRequest(
                    f"{self.name} must be seconds or a duration like '1h' or '30m'", code="invalid_duration"
                ) from None
        return body

    def describe(self) -> str:
        return f"parse duration {self.name}"


# ------------------------------------------------------------------------------------ helpers


#: A query string that parse_qsl + urlencode give back byte for byte: name=value pairs of
#: unreserved characters only (no percent-escapes, "+", blank fields or names without "=").
_PLAIN_QUERY = re.compile(rb"(?:[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*(?:&[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*)*)?")


def rewrite_query(raw: bytes, ops: Sequence[DropQuery | DefaultQuery | LowerBoolQuery]) -> bytes:
    if not ops:
        return raw
    if _PLAIN_QUERY.fullmatch(raw):
        # Most queries (none at all, ?limit=10): parsing and re-encoding would give `raw` back,
        # so when no op changes the pairs, `raw` is the answer without urlencode's work.
        plain: Query = [tuple(p.decode("ascii").split("=", 1)) for p in raw.split(b"&")] if raw else []  # type: ignore[misc]
        query = plain
        for op in ops:
            query = op.apply(query)
        if query == plain:
            return raw
        return urlencode(query).encode("latin-1")
    query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    for op in ops:
        query = op.apply(query)
    return urlencode(query).encode("latin-1")


def query_values(raw: bytes, name: str) -> list[str]:
    return [v for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if k == name]


#: A JSON string (skipped whole), or one structural byte: [ ] { } ,
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
MAX_DEPTH = 128
MAX_ELEMENTS = 1_000_000


def check_json_shape(raw: bytes, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS) -> None:
    """Refuse (400) a body nested deeper than `max_depth` or with more than `max_elements` values,
    before `json.loads` recurses into it (a RecursionError would be a 500, and SDKs retry 5xx).

    Values are counted as commas + containers + 1. Most bodies are decided by three
    `bytes.count` calls; only a body that might exceed a limit is scanned token by token.
    """
    opens = raw.count(b"[") + raw.count(b"{")
    if opens <= max_depth and raw.count(b",") + opens < max_elements:
        return
    depth = elements = 0
    for m in _STRUCTURE.finditer(raw):
        c = raw[m.start()]
        if c == 0x22:  # a string: brackets inside it do not count
            continue
        if c == 0x2C:  # ,
            elements += 1
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            elements += 1
            if depth > max_depth:
                raise BadRequest(
                    f"request body nested deeper than {max_depth} levels (QCP_MAX_JSON_DEPTH)", code="json_too_deep"
                )
        else:
            depth -= 1
        if elements >= max_elements:
            raise BadRequest(
                f"request body has more than {max_elements} JSON values (QCP_MAX_JSON_ELEMENTS)",
                code="json_too_large",
            )


def parse_json_object(raw: bytes, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS) -> dict[str, Any]:
    """Parse a JSON body whatever its Content-Type (0.23 and the provider send none), within limits."""
    if not raw.strip():
        return {}
    check_json_shape(raw, max_depth, max_elements)
    try:
        doc = fastjson.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # a guard: check_json_shape should have refused it
        raise BadRequest("request body nested too deeply", code="json_too_deep") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return doc


def rewrite_body(doc: dict[str, Any], ops: Sequence[Any]) -> dict[str, Any]:
    for op in ops:
        doc = op.apply(doc)
    return doc


def dumps(doc: Any) -> bytes:
    return fastjson.dumps(doc)


def drop(*names: str) -> DropKeys:
    return DropKeys(names)


def drop_query(*names: str) -> DropQuery:
    return DropQuery(names)


def rename(old: str, new: str) -> RenameKey:
    return RenameKey(old, new)


def default(name: str, value: Any) -> DefaultKey:
    return DefaultKey(name, value)


def duration(name: str) -> DurationKey:
    return DurationKey(name)


def default_query(name: str, value: str) -> DefaultQuery:
    return DefaultQuery(name, value)


def lower_bools(*names: str) -> LowerBoolQuery:
    return LowerBoolQuery(names)


# Every forward drops `provider`: the instance travels as Service-CRN instead.
PROVIDER = drop_query("provider")

# ------------------------------------------------------------------------------ the request step


@dataclass(frozen=True)
class UpstreamRequest:
    """What goes to the new API for one Classic request, before identity headers are added."""

    method: str
    path: str  # e.g. /v1/jobs/abc
    query: bytes  # raw query string, without "?"
    body: bytes | None  # the rewritten JSON body; None when the route takes none (or it is spooled)

    @property
    def label(self) -> str:
        """"METHOD /v1/..." for the access log."""
        return f"{self.method} {self.path}"


def translate_request(
    route: Route, params: dict[str, str], query: bytes, doc: dict[str, Any] | None
) -> UpstreamRequest:
    """The Classic request as the new API wants it: path, query and body rewrites of the row.

    Pure: no I/O, no settings. `doc` is the parsed JSON body (None: no body to rewrite, e.g. a
    large body already filtered while it streamed in).
    """
    action = route.action
    ops_query: tuple[Any, ...] = getattr(action, "query", ())
    if (ops_query or b"provider" in query) and (query or any(type(op) is DefaultQuery for op in ops_query)):
        # (an empty query stays empty unless an op adds a default)
        query = rewrite_query(query, (PROVIDER, *ops_query))
    body = dumps(rewrite_body(doc, getattr(action, "body", None) or ())) if doc is not None else None
    return UpstreamRequest(route.method, route.upstream_path(params), query, body)
