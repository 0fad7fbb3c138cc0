"""Structured logs: one access line per request, text or JSON; secrets never reach a record.

Only fields from Call are logged (ids, names, templates, status, timing): no headers, no query,
no bodies, so the API key, bearer tokens and client tokens cannot appear by construction.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .call import Call

access_log = logging.getLogger("qiskit_classic_proxy.access")


class _SecondCache:
    """strftime once per second, not once per line (one access line per request)."""

    def __init__(self, convert: Any, fmt: str) -> None:
        self.convert, self.fmt = convert, fmt
        self.second, self.text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.fmt, self.convert(second))
        return self.text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._utc = _SecondCache(time.gmtime, "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._utc(record.created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        else:
            doc["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc"] = record.exc_info[0].__name__
        return json.dumps(doc, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._local = _SecondCache(self.converter, self.default_time_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.default_msec_format % (self._local(record.created), record.msecs)

    def formatException(self, ei: Any) -> str:
        # Tracebacks can hold locals' reprs; log the type only.
        return f"  exception: {ei[0].__name__}" if ei and ei[0] else ""


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("qiskit_classic_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_access(call: Call) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    ms = (time.perf_counter() - call.started) * 1000
    route = call.route.key if call.route else f"{call.method} (unmatched)"
    fields = {
        "request_id": call.request_id,
        "caller": call.caller,
        "sdk": call.sdk,
        "route": route,
        "action": call.action,
        "upstream": call.upstream,
        "status": call.status,
        "ms": round(ms, 2),
    }
    # Logger.info would also walk the stack for the caller's file and line (findCaller), which no
    # formatter here prints: make the record directly; handle() still applies filters and handlers.
    access_log.handle(access_log.makeRecord(
        access_log.name, logging.INFO, "proxy/logs.py", 0,
        '%s %s -> %s %d %.1fms caller=%s rid=%s',
        (route, call.action, call.upstream, call.status, ms, call.caller, call.request_id),
        None, func="log_access", extra={"fields": fields},
    ))
