"""The hot path's upstream answer: `UpstreamResponse` and its `ResponseHeaders`.

Built by `proxy.upstream.transport.NativeTransport.exchange`, consumed through
`proxy.upstream.client` (`read`, `raw_chunks`, `whole_body`, `response_headers`) and the pipeline.
A module of its own so that the transport and the client both use it without importing each other.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["Response", "ResponseHeaders", "UpstreamResponse"]


class ResponseHeaders:
    """An answer's headers as `NativeTransport` parsed them: the part of `httpx.Headers` the proxy
    uses (`get`, `[]`, `in`, `raw`), without httpx's per-header normalization on every answer.

    `raw` holds the (name, value) byte pairs in arrival order, names lower-cased (HTTP names are
    case-insensitive; `response_headers` sends them lower-cased anyway). `named` is the set of
    header names the Connection header lists (hop-by-hop for this answer), None when it has none;
    `coded` says whether a Content-Encoding header came. The transport fills both while parsing.
    """

    __slots__ = ("coded", "named", "raw")

    def __init__(
        self, raw: list[tuple[bytes, bytes]], named: frozenset[bytes] | None = None, coded: bool | None = None
    ) -> None:
        self.raw = raw
        self.named = named
        self.coded = any(k == b"content-encoding" for k, _ in raw) if coded is None else coded

    def get(self, key: str, default: str | None = None) -> str | None:
        """As httpx.Headers.get: case-insensitive; repeated headers joined with ", "."""
        name = key.lower().encode("latin-1")
        values = [v for k, v in self.raw if k == name]
        if not values:
            return default
        value = values[0] if len(values) == 1 else b", ".join(values)
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return value.decode(self._encoding())

    def _encoding(self) -> str:
        """httpx.Headers' choice for the whole block when it is not all ASCII: UTF-8 if it decodes, else Latin-1."""
        try:
            for k, v in self.raw:
                k.decode("utf-8")
                v.decode("utf-8")
        except UnicodeDecodeError:
            return "iso-8859-1"
        return "utf-8"

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = key.lower().encode("latin-1")
        return any(k == name for k, _ in self.raw)

    def multi_items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]

    def __repr__(self) -> str:  # names only: values may carry tokens
        return f"ResponseHeaders({[k.decode('latin-1') for k, _ in self.raw]})"


class UpstreamResponse:
    """An upstream answer on the hot path: what `proxy.pipeline` uses of `httpx.Response`
    (`status_code`, `headers`, `aread`, `aclose`, and `read` / `raw_chunks` / `response_headers`
    below), built by `NativeTransport.exchange` straight from the parser's output. An
    `httpx.Response` costs more to build and to read than the exchange itself (~20 µs).
    The other transports answer with `httpx.Response`; every function here takes both.

    `stream` is the transport's body stream: `async for` yields the body as received,
    `read_all()` returns it whole, `release()` frees the connection (back to the pool when
    the body was read to its end, else closed), once, synchronously.
    """

    __slots__ = ("_content", "consumed", "headers", "status_code", "stream")

    def __init__(self, status_code: int, headers: ResponseHeaders, stream: Any) -> None:
        self.status_code = status_code
        self.headers = headers
        self.stream = stream
        self.consumed = False
        self._content: bytes | None = None

    @property
    def is_closed(self) -> bool:
        return self.stream.released

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    async def aread(self) -> bytes:
        """The whole body, as httpx's `aread` gives it (content coding undone); frees the connection."""
        if self._content is not None:
            return self._content
        if self.consumed:
            raise httpx.StreamConsumed()
        if self.stream.released:
            raise httpx.StreamClosed()
        self.consumed = True
        if self.headers.coded:  # rare (the proxy asks for identity): httpx's decoders undo it
            coded = httpx.Response(self.status_code, headers=self.headers.raw, stream=self.stream)
            data = await coded.aread()
        else:
            data = self.stream.whole()
            if data is None:
                data = await self.stream.read_all()
        self.stream.release()
        self._content = data
        return data

    async def aclose(self) -> None:
        self.stream.release()

    def __repr__(self) -> str:
        return f"<UpstreamResponse [{self.status_code}]>"


Response = httpx.Response | UpstreamResponse
