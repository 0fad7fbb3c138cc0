"""JSON for the answers the proxy reshapes: orjson where it gives the stdlib's result, else the stdlib.

The fix-up routes (job polling, lists, submissions) parse and re-serialize every answer; orjson does
that several times faster. It differs from `json` in a few corners, which go to `json` instead, so
what the proxy accepts and the values it sends on do not change:

- integers beyond 64 bits: orjson reads them as floats (a precision loss), so any run of 20 digits
  sends the document to `json.loads` (found with two C-speed passes, far cheaper than a regex; a
  false alarm, e.g. digits in a string, only costs speed);
- what orjson refuses and `json` accepts (NaN/Infinity, UTF-16/32 bodies, lone surrogates);
- what orjson cannot write (integers beyond 64 bits, non-string keys).

A NaN read by that fallback is written as null. The bytes can differ from `json.dumps` (UTF-8
instead of \\u escapes, 1e16 for 1e+16); the JSON value is the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Every digit -> b"0", everything else -> b" ": a run of 20 digits becomes b"0" * 20.
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_RUN = b"0" * 20
JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError is a subclass


def loads(data: bytes) -> Any:
    """Like `json.loads`; raises `json.JSONDecodeError` (a ValueError) or UnicodeDecodeError as it does."""
    if _RUN not in data.translate(_DIGITS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # maybe valid for json (NaN, UTF-16, ...): let it decide, and raise its error
    return json.loads(data)


def dumps(doc: Any) -> bytes:
    """Compact JSON bytes (`json.dumps(doc, separators=(",", ":")).encode()` where orjson cannot)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":")).encode()
