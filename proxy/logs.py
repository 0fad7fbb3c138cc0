"""Structured logs: one access line per request, text or JSON; secrets never reach a record.

Only fields from Call are logged (ids, names, templates, status, timing): no headers, no query,
no bodies, so the API key, bearer tokens and client tokens cannot appear by construction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
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

    def access_line(self, created: float, msg: str, fields: dict[str, Any]) -> str:
        """What format() gives for log_access's record, without building one (the per-request fast path)."""
        msecs = int((created - int(created)) * 1000)
        doc: dict[str, Any] = {"ts": self._utc(created) + f".{msecs:03d}Z", "level": "info", "logger": access_log.name}
        doc.update(fields)
        return json.dumps(doc, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._local = _SecondCache(self.converter, self.default_time_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.default_msec_format % (self._local(record.created), record.msecs)

    def access_line(self, created: float, msg: str, fields: dict[str, Any]) -> str:
        """What format() gives for log_access's record, without building one (the per-request fast path)."""
        msecs = int((created - int(created)) * 1000)
        return f"{self.default_msec_format % (self._local(created), msecs)} INFO {access_log.name}: {msg}"

    def formatException(self, ei: Any) -> str:
        # Tracebacks can hold locals' reprs; log the type only.
        return f"  exception: {ei[0].__name__}" if ei and ei[0] else ""


_MAIN_THREAD = threading.main_thread().ident


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines logged from the event loop are written in batches: one write per `interval`, not a
    write and a flush per request (one access line each). Same text, same order.

    On the event loop the first line of a batch schedules its flush (`interval` seconds later, or
    at once when `batch` lines wait); from anywhere else a line is written at once. No thread: a
    writer thread would cost more CPU in GIL hand-offs than the writes it saves. flush() (called by
    logging at exit) and close() write what is left.
    """

    def __init__(self, stream: Any = None, interval: float = 0.05, batch: int = 256) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._interval, self._batch = interval, batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.emit_line(line)

    def emit_line(self, line: str) -> None:
        """Queue one formatted line (with its terminator); the caller holds self.lock."""
        loop = self._timer_loop
        # A flush pending on a running loop of the main thread, called from the main thread: that
        # loop is this one (asyncio.get_running_loop() costs a getpid() syscall on every call).
        pending = self._timer is not None and loop is not None and threading.get_ident() == _MAIN_THREAD
        if not (pending and loop.is_running()):  # type: ignore[union-attr]
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or threading.get_ident() != _MAIN_THREAD:
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)
        if len(self._lines) >= self._batch:
            self.flush()
        elif self._timer is None or self._timer_loop is not loop:  # (a stale timer of a finished loop)
            self._timer, self._timer_loop = loop.call_later(self._interval, self.flush), loop

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            lines, self._lines = self._lines, []
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nothing sensible to do with a log line

    def close(self) -> None:
        self.flush()
        super().close()


def configure(level: str = "info", fmt: str = "text") -> None:
    """The proxy's loggers, uvicorn's (start-up, errors, shutdown: serve passes log_config=None) and
    everything else (warnings, other libraries) through one handler: with json, every line is JSON."""
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    # The proxy's own lines (the access log: one per request) are written in batches; the rest as they come.
    buffered = BufferedStreamHandler(sys.stderr)
    buffered.setFormatter(formatter)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    for name, h in (("qiskit_classic_proxy", buffered), ("uvicorn", handler)):
        logger = logging.getLogger(name)
        for old in logger.handlers:
            old.flush()
        logger.handlers[:] = [h]
        logger.setLevel(level.upper())
        logger.propagate = False
    for name in ("uvicorn.error", "uvicorn.access"):  # through "uvicorn"'s handler
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Other libraries and warnings propagate to the root: add ours there (replacing only our own
    # earlier one, so that handlers others installed, like pytest's, stay).
    handler._qcp = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_qcp", False)] + [handler]
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


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
    # The usual set-up (configure(): one buffered handler on the parent, no filters, no other handler):
    # format the line directly, as the handler's formatter would, without a LogRecord (~8 % of a
    # request's CPU went to the record and %-formatting, BENCHMARKS.md). Anything else: the record path.
    parent = access_log.parent
    if not access_log.handlers and not access_log.filters and access_log.propagate and parent is not None:
        handlers = parent.handlers
        if len(handlers) == 1 and type(handlers[0]) is BufferedStreamHandler and not parent.filters:
            h = handlers[0]
            fmt = h.formatter
            if type(fmt) in (TextFormatter, JsonFormatter) and not h.filters and h.level <= logging.INFO:
                msg = (f"{route} {call.action} -> {call.upstream} {call.status:d} {ms:.1f}ms "
                       f"caller={call.caller} rid={call.request_id}")
                line = fmt.access_line(time.time(), msg, fields) + h.terminator  # type: ignore[union-attr]
                with h.lock:  # type: ignore[union-attr]
                    h.emit_line(line)
                return
    # Logger.info would also walk the stack for the caller's file and line (findCaller), which no
    # formatter here prints: make the record directly; handle() still applies filters and handlers.
    access_log.handle(access_log.makeRecord(
        access_log.name, logging.INFO, "proxy/logs.py", 0,
        '%s %s -> %s %d %.1fms caller=%s rid=%s',
        (route, call.action, call.upstream, call.status, ms, call.caller, call.request_id),
        None, func="log_access", extra={"fields": fields},
    ))
