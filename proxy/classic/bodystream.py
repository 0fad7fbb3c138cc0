"""Streaming rewrite of large JSON request bodies: drop top-level keys without holding the body.

Job submissions can be 100 MB+ (circuits, parameter arrays). The small-body path parses the
whole document with `json` and dumps it again; that costs several times the body in memory.
Beyond a threshold the proxy instead runs the body through `KeyFilter`, a validating state
machine over bytes that:

- checks the body is one JSON object, as strictly as `json.loads` (strings, escapes, numbers,
  literals incl. NaN/Infinity, nesting, UTF-8; a leading UTF-8 BOM is accepted), so a malformed
  body is refused with 400 before anything is forwarded;
- drops `"key": value` pairs of the top-level object whose key is in `drop` (escaped spellings
  like "\\u0068ub" included), re-joining the remaining members with commas;
- captures the values of a few small top-level keys (`capture`: hub/group/project/instance/
  program_id) for instance selection and the retired-program check;
- otherwise passes the bytes through unchanged (formatting of kept members is preserved).

Runs of scalars inside nested arrays and objects are matched by one regular expression each,
and long strings by a character-class scan, so the Python loop runs per structural token, not
per byte. `Spooler` feeds the filter from the ASGI body chunks and writes its output into a
`SpooledTemporaryFile` (memory up to 1 MiB, then disk): memory stays bounded and the body can be
replayed (the one retry after an upstream 401).

Why one long module: `KeyFilter._run` is one state machine over bytes (a loop that must not pay
a call per token), and the filter, spool and spooler are only used together.
"""

from __future__ import annotations

import codecs
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from typing import Any

from ..errors import BadRequest

__all__ = [
    "CAPTURE",
    "STREAM_THRESHOLD",
    "JsonLimitError",
    "JsonStreamError",
    "KeyFilter",
    "SpooledBody",
    "Spooler",
    "filter_bytes",
    "stream_drops",
]

#: Bodies up to this size take the in-memory path (json.loads + rewrite + dumps).
STREAM_THRESHOLD = 1024 * 1024
#: Top-level keys whose (small) values the proxy needs before forwarding.
CAPTURE = frozenset({"hub", "group", "project", "instance", "program_id"})
#: Longest raw key (with escapes) that is compared against drop/capture names; longer keys are kept.
KEY_MAX = 512
#: Longest raw value captured; a longer one is recorded as `OPAQUE` (not a string).
CAPTURE_MAX = 4096
#: Longest number or literal token (json.loads refuses ints over 4300 digits anyway).
TOKEN_MAX = 64 * 1024
#: Deepest nesting accepted (arrays and objects; the settings' max_json_depth overrides it).
MAX_DEPTH = 128
#: Chunk size when replaying a spooled body.
READ_CHUNK = 256 * 1024

_WS = re.compile(rb"[ \t\n\r]*")
_STR_BODY = re.compile(rb'[^"\\\x00-\x1f]*')
_TOKEN = re.compile(rb"[-+.0-9A-Za-z]+")
_NUM = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(_NUM)
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_LITERALS = frozenset({b"true", b"false", b"null", b"NaN", b"Infinity", b"-Infinity"})
_ESCAPES = frozenset(b'"\\/bfnrt')
_S = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_SCALAR = rb"(?:" + _S + rb"|" + _NUM + rb"|true|false|null|NaN|-?Infinity)"
_W = rb"[ \t\n\r]*"


def _nest(inner: bytes) -> bytes:
    """A whole array or object whose elements / member values match `inner`."""
    arr = rb"\[" + _W + rb"(?:" + inner + _W + rb"(?:," + _W + inner + _W + rb")*)?\]"
    member = _S + _W + rb":" + _W + inner + _W
    obj = rb"\{" + _W + rb"(?:" + member + rb"(?:," + _W + member + rb")*)?\}"
    return rb"(?:" + arr + rb"|" + obj + rb")"


#: A value nested at most 3 deep (scalars, and small containers of them) in one regex match.
_V1 = rb"(?:" + _SCALAR + rb"|" + _nest(_SCALAR) + rb")"
_V2 = rb"(?:" + _SCALAR + rb"|" + _nest(_V1) + rb")"
_V3 = rb"(?:" + _SCALAR + rb"|" + _nest(_V2) + rb")"
#: One or more `value ,` inside an array (`key: value ,` inside an object); each repetition ends
#: with a comma, so a match never ends inside a token even at the end of a chunk.
_ARRAY_RUN = re.compile(rb"(?:" + _W + _V3 + _W + rb",)+")
_OBJECT_RUN = re.compile(rb"(?:" + _W + _S + _W + rb":" + _W + _V3 + _W + rb",)+")

# What the parser expects next.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE, _DONE = range(7)
_OBJ, _ARR = 0x7B, 0x5B  # "{", "["


class JsonStreamError(ValueError):
    """The body is not a valid JSON object; `pos` is the byte offset of the problem."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"{message} at byte {pos}")
        self.pos = pos


class JsonLimitError(JsonStreamError):
    """The body is valid so far but nested deeper than allowed (QCP_MAX_JSON_DEPTH)."""


class _Opaque:
    """A captured value too large to keep: present, but not a string (so never used as a name)."""

    def __repr__(self) -> str:
        return "<large value>"


OPAQUE = _Opaque()


class KeyFilter:
    """Incremental validator + top-level key dropper. `feed(chunk) -> bytes`, then `close() -> bytes`."""

    def __init__(
        self, drop: Iterable[str] = (), capture: Iterable[str] = CAPTURE, max_depth: int = MAX_DEPTH
    ) -> None:
        self.max_depth = max_depth
        self.drop = frozenset(drop)
        self.capture = frozenset(capture)
        self.captured: dict[str, Any] = {}
        # surrogatepass: json.loads(bytes) decodes that way too (it accepts UTF-8-encoded surrogates)
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="surrogatepass")
        self._tail = b""
        self._offset = 0  # bytes consumed before the current buffer
        self._stack = bytearray()
        self._expect = _VALUE
        self._in_str = False
        self._str_is_key = False
        self._started = False  # BOM checked
        self._seen = False  # any non-whitespace
        # depth-1 member being read
        self._key_mode = 0  # 0: none, 1: collecting a depth-1 key, 2: long key, already emitted
        self._key_raw = bytearray()
        self._member = False  # between a depth-1 key's end and its value's end
        self._keep = False
        self._cap: str | None = None
        self._cap_raw = bytearray()
        self._cap_over = False
        self._any_kept = False
        self._out = bytearray()

    # -- public ---------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        try:
            self._dec.decode(chunk)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"invalid UTF-8 ({exc.reason})", self._offset + len(self._tail)) from None
        buf = self._tail + chunk if self._tail else chunk
        if not self._started:
            if len(buf) < 3 and codecs.BOM_UTF8.startswith(buf):
                self._tail = buf
                return b""
            self._started = True
            if buf.startswith(codecs.BOM_UTF8):
                buf = buf[3:]
                self._offset += 3
        self._run(buf, False)
        return self._take()

    def close(self) -> bytes:
        """End of body: validate what is left; returns the last output bytes."""
        try:
            self._dec.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"invalid UTF-8 ({exc.reason})", self._offset + len(self._tail)) from None
        buf = self._tail
        self._tail = b""
        if not self._started and buf.startswith(codecs.BOM_UTF8):
            buf = buf[3:]
        self._started = True
        if buf:
            self._run(buf, True)
        if not self._seen:
            self._out += b"{}"  # like the small path: an empty body is an empty object
        elif self._in_str or self._expect != _DONE or self._tail:
            raise JsonStreamError("unexpected end of the JSON body", self._offset + len(self._tail))
        return self._take()

    # -- internals ------------------------------------------------------------------------------
    def _take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _fail(self, message: str, i: int) -> JsonStreamError:
        return JsonStreamError(message, self._offset + i)

    def _emit_seg(self, buf: bytes, start: int, end: int) -> None:
        """Bytes of the current depth-1 member's value (or of a long key)."""
        if end > start:
            if self._keep:
                self._out += buf[start:end]
            if self._cap is not None and not self._cap_over:
                if len(self._cap_raw) + end - start > CAPTURE_MAX:
                    self._cap_over = True
                    self._cap_raw.clear()
                else:
                    self._cap_raw += buf[start:end]

    def _start_member(self, key_raw: bytes, name: str | None) -> None:
        self._member = True
        self._keep = name is None or name not in self.drop
        self._cap = name if name is not None and name in self.capture else None
        self._cap_raw.clear()
        self._cap_over = False
        if self._keep:
            if self._any_kept:
                self._out += b","
            self._any_kept = True
            self._out += key_raw

    def _end_member(self) -> None:
        self._member = False
        if self._cap is not None:
            if self._cap_over:
                self.captured[self._cap] = OPAQUE
            else:
                raw = bytes(self._cap_raw).strip(b" \t\n\r")
                raw = raw[1:].lstrip(b" \t\n\r") if raw.startswith(b":") else raw
                self.captured[self._cap] = json.loads(raw)
            self._cap = None

    def _run(self, buf: bytes, final: bool) -> None:
        n = len(buf)
        i = 0
        stack = self._stack
        expect = self._expect
        # The run regexes swallow values nested up to 3 deeper without the stack seeing them:
        # near the depth limit, go token by token so that the limit is exact.
        deep = self.max_depth - 3
        seg = 0 if (self._member or self._key_mode == 2) else -1  # start of the pending member bytes
        kstart = 0 if self._key_mode == 1 else -1  # start of the pending depth-1 key bytes
        try:
            while i < n:
                if self._in_str:
                    j = _STR_BODY.match(buf, i).end()
                    if j >= n:
                        i = n
                        break
                    c = buf[j]
                    if c == 0x22:  # closing quote
                        i = j + 1
                        self._in_str = False
                        if self._str_is_key:
                            expect = _COLON
                            if self._key_mode == 1:
                                raw = bytes(self._key_raw) + buf[kstart:i]
                                self._key_raw.clear()
                                self._key_mode = 0
                                kstart = -1
                                name = json.loads(raw) if len(raw) <= KEY_MAX else None
                                self._start_member(raw, name)
                                seg = i
                            elif self._key_mode == 2:
                                self._key_mode = 0
                                self._member = True
                        else:
                            expect = _COMMA_OR_CLOSE
                            if len(stack) == 1:  # a depth-1 string value ended
                                self._emit_seg(buf, seg, i)
                                seg = -1
                                self._end_member()
                        continue
                    if c == 0x5C:  # backslash
                        if j + 1 >= n:
                            i = j
                            break
                        e = buf[j + 1]
                        if e == 0x75:  # \uXXXX
                            if j + 6 > n:
                                i = j
                                break
                            if not _HEX4.fullmatch(buf, j + 2, j + 6):
                                raise self._fail("invalid \\u escape", j)
                            i = j + 6
                        elif e in _ESCAPES:
                            i = j + 2
                        else:
                            raise self._fail("invalid escape", j)
                        continue
                    raise self._fail("control character in a string", j)

                i = _WS.match(buf, i).end()
                if i >= n:
                    break
                c = buf[i]
                self._seen = True

                if expect == _COMMA_OR_CLOSE:
                    if c == 0x2C:  # ,
                        i += 1
                        expect = _KEY if stack[-1] == _OBJ else _VALUE
                        if 2 <= len(stack) <= deep:
                            if expect == _VALUE:
                                m = _ARRAY_RUN.match(buf, i)
                            else:
                                m = _OBJECT_RUN.match(buf, i)
                            if m is not None:
                                i = m.end()
                        continue
                    if (c == 0x7D and stack[-1] == _OBJ) or (c == 0x5D and stack[-1] == _ARR):
                        i = self._close(buf, i, stack)
                        if len(stack) == 1:
                            self._emit_seg(buf, seg, i)
                            seg = -1
                            self._end_member()
                        expect = _DONE if not stack else _COMMA_OR_CLOSE
                        continue
                    raise self._fail("expected ',' or a closing bracket", i)

                if expect == _VALUE or expect == _VALUE_OR_CLOSE:
                    if c == 0x22:
                        if not stack:
                            raise self._fail("the body must be a JSON object", i)
                        self._in_str = True
                        self._str_is_key = False
                        i += 1
                        continue
                    if c == 0x7B or c == 0x5B:
                        if not stack:
                            if c != 0x7B:
                                raise self._fail("the body must be a JSON object", i)
                            self._out += b"{"
                        stack.append(c)
                        if len(stack) > self.max_depth:
                            raise JsonLimitError(
                                f"nested deeper than {self.max_depth} levels (QCP_MAX_JSON_DEPTH)", self._offset + i
                            )
                        i += 1
                        if c == _OBJ:
                            expect = _KEY_OR_CLOSE
                            if 2 <= len(stack) <= deep:
                                m = _OBJECT_RUN.match(buf, i)
                                if m is not None:
                                    i = m.end()
                                    expect = _KEY
                        else:
                            expect = _VALUE_OR_CLOSE
                            m = _ARRAY_RUN.match(buf, i) if len(stack) <= deep else None
                            if m is not None:
                                i = m.end()
                                expect = _VALUE
                        continue
                    if c == 0x5D and expect == _VALUE_OR_CLOSE:
                        i = self._close(buf, i, stack)
                        if len(stack) == 1:
                            self._emit_seg(buf, seg, i)
                            seg = -1
                            self._end_member()
                        expect = _COMMA_OR_CLOSE
                        continue
                    m = _TOKEN.match(buf, i)
                    if m is None:
                        raise self._fail("expected a value", i)
                    j = m.end()
                    if j >= n and not final:
                        if j - i > TOKEN_MAX:
                            raise self._fail("number too long", i)
                        break  # may continue in the next chunk
                    tok = buf[i:j]
                    if tok not in _LITERALS and not _NUMBER.fullmatch(tok):
                        raise self._fail("invalid literal or number", i)
                    if not stack:
                        raise self._fail("the body must be a JSON object", i)
                    i = j
                    expect = _COMMA_OR_CLOSE
                    if len(stack) == 1:
                        self._emit_seg(buf, seg, i)
                        seg = -1
                        self._end_member()
                    continue

                if expect == _KEY or expect == _KEY_OR_CLOSE:
                    if c == 0x22:
                        self._in_str = True
                        self._str_is_key = True
                        if len(stack) == 1:
                            self._key_mode = 1
                            self._key_raw.clear()
                            kstart = i
                        i += 1
                        continue
                    if c == 0x7D and expect == _KEY_OR_CLOSE:
                        i = self._close(buf, i, stack)
                        if len(stack) == 1:
                            self._emit_seg(buf, seg, i)
                            seg = -1
                            self._end_member()
                        expect = _DONE if not stack else _COMMA_OR_CLOSE
                        continue
                    raise self._fail("expected a string key", i)

                if expect == _COLON:
                    if c != 0x3A:
                        raise self._fail("expected ':'", i)
                    i += 1
                    expect = _VALUE
                    continue

                raise self._fail("extra data after the JSON object", i)  # _DONE
        finally:
            self._expect = expect
        # End of this buffer: hand over partial state to the next feed.
        if self._key_mode == 1 and kstart >= 0:
            self._key_raw += buf[kstart:i]
            if len(self._key_raw) > KEY_MAX:  # too long to be a name we act on: keep, stream it
                raw = bytes(self._key_raw)
                self._key_raw.clear()
                self._key_mode = 2
                self._start_member(raw, None)
                self._member = False  # becomes a member once the key closes
        elif seg >= 0:
            self._emit_seg(buf, seg, i)
        self._offset += i
        self._tail = buf[i:]
        if len(self._tail) > TOKEN_MAX:
            raise self._fail("token too long", 0)

    def _close(self, buf: bytes, i: int, stack: bytearray) -> int:
        stack.pop()
        if not stack:
            self._out += b"}"
        return i + 1


def filter_bytes(
    data: bytes, drop: Iterable[str] = (), capture: Iterable[str] = CAPTURE
) -> tuple[bytes, dict[str, Any]]:
    """Whole-buffer convenience (tests, tools): (filtered body, captured values)."""
    f = KeyFilter(drop, capture)
    out = f.feed(data) + f.close()
    return out, f.captured


@lru_cache(maxsize=64)
def stream_drops(ops: tuple[Any, ...]) -> frozenset[str] | None:
    """The keys to drop if a route's body ops are all plain drops (streamable), else None."""
    from .rewrite import DropKeys

    names: set[str] = set()
    for op in ops:
        if not isinstance(op, DropKeys):
            return None
        names.update(op.names)
    return frozenset(names)


class SpooledBody:
    """A filtered body held in a SpooledTemporaryFile: `stream()` replays it from the start."""

    def __init__(self, max_memory: int = STREAM_THRESHOLD) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=max_memory)
        self.size = 0
        self.captured: dict[str, Any] = {}

    def write(self, data: bytes) -> None:
        if data:
            self.file.write(data)
            self.size += len(data)

    async def stream(self, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        pos = 0
        while pos < self.size:
            self.file.seek(pos)
            data = self.file.read(min(chunk_size, self.size - pos))
            if not data:
                return
            pos += len(data)
            yield data

    def append_member(self, key: str, value: Any) -> None:
        """Add `"key": value` as the last member of the spooled (already filtered) object."""
        close, last = self._last_byte(self.size)
        if last != b"}":
            raise ValueError("the spooled body does not end with '}'")
        empty = self._last_byte(close)[1] == b"{"
        member = json.dumps({key: value}, separators=(",", ":")).encode()[1:-1]
        self.file.seek(close)
        self.file.truncate()
        self.file.write((b"" if empty else b",") + member + b"}")
        self.size = close + len(member) + (1 if empty else 2)

    def _last_byte(self, end: int) -> tuple[int, bytes]:
        """(offset, byte) of the last non-whitespace byte before `end`; (-1, b"") if none."""
        while end > 0:
            start = max(0, end - 4096)
            self.file.seek(start)
            chunk = self.file.read(end - start).rstrip(b" \t\r\n")
            if chunk:
                return start + len(chunk) - 1, chunk[-1:]
            end = start
        return -1, b""

    def close(self) -> None:
        self.file.close()


def _bad_json(exc: JsonStreamError) -> BadRequest:
    if isinstance(exc, JsonLimitError):
        return BadRequest(f"request body {exc}", code="json_too_deep")
    return BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json")


class Spooler:
    """Collects an ASGI request body: in memory up to `threshold`, then filtered into a spool.

    `add(chunk)` per body chunk, then `finish()` -> bytes (small body, caller parses it) or a
    `SpooledBody` (already validated and filtered; `captured` holds the small values).
    Invalid JSON raises `BadRequest` (400) from `add` or `finish`; the spool is closed then.
    """

    def __init__(
        self,
        drop: Iterable[str],
        threshold: int = STREAM_THRESHOLD,
        capture: Iterable[str] = CAPTURE,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.max_depth = max_depth
        self.drop = frozenset(drop)
        self.capture = frozenset(capture)
        self.threshold = threshold
        self.chunks: list[bytes] = []
        self.size = 0
        self.filter: KeyFilter | None = None
        self.spool: SpooledBody | None = None

    def add(self, chunk: bytes) -> None:
        if self.filter is None:
            self.chunks.append(chunk)
            self.size += len(chunk)
            if self.size > self.threshold:
                self.filter = KeyFilter(self.drop, self.capture, self.max_depth)
                self.spool = SpooledBody()
                chunks, self.chunks = self.chunks, []
                for c in chunks:
                    self._feed(c)
        else:
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        assert self.filter is not None and self.spool is not None
        try:
            self.spool.write(self.filter.feed(chunk))
        except JsonStreamError as exc:
            self.close()
            raise _bad_json(exc) from None

    def finish(self) -> bytes | SpooledBody:
        if self.filter is None:
            return b"".join(self.chunks)
        assert self.spool is not None
        try:
            self.spool.write(self.filter.close())
        except JsonStreamError as exc:
            self.close()
            raise _bad_json(exc) from None
        self.spool.captured = self.filter.captured
        spool, self.spool = self.spool, None
        return spool

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
