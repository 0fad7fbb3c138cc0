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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
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

    def formatException(self, ei: Any) -> str:
        # Tracebacks can hold locals' reprs; log the type only.
        return f"  exception: {ei[0].__name__}" if ei and ei[0] else ""


def configure(level: str = "info", fmt: str = "text") -> None:
    """The proxy's loggers, uvicorn's (start-up, errors, shutdown: serve passes log_config=None) and
    everything else (warnings, other libraries) through one handler: with json, every line is JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in ("qiskit_classic_proxy", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
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
    access_log.info(
        '%s %s -> %s %d %.1fms caller=%s rid=%s',
        route, call.action, call.upstream, call.status, ms, call.caller, call.request_id,
        extra={"fields": fields},
    )
