"""Step bookkeeping shared by drive_runtime.py and drive_provider.py.

Runs inside the legacy-SDK virtualenvs (Python 3.11, any qiskit): standard library only, and
nothing from the proxy package. Each step is bounded by a SIGALRM timer, records the warnings
and WARNING+ log lines the SDK emitted while it ran, and ends up as one JSON record:

    {"step": name, "ok": bool, "optional": bool, "seconds": float,
     "detail": str | "error": str, ["skipped": true], ["warnings": [...]], ["traceback": [...]]}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import time
import traceback
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any


class StepTimeout(BaseException):
    """Raised by the alarm handler. BaseException so SDK `except Exception` blocks can't eat it."""


class StepFailed(Exception):
    """A check inside a step did not hold."""


class Skip(Exception):
    """The step cannot run (a prerequisite failed); recorded as a failed, skipped step."""


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise StepFailed(msg)


class _NoTraceback(logging.Filter):
    """Keep SDK warnings on the console to their message line (0.23 logs a full traceback for
    every job when its websocket is refused over plain http, legacy-clients.md section 5.6)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info = None
            record.exc_text = None
        msg = record.getMessage()
        if "\n" in msg:
            record.msg, record.args = msg.split("\n", 1)[0] + " [...]", None
        return True


def quiet_sdk_tracebacks() -> None:
    for name in ("qiskit_ibm_runtime", "qiskit_ibm_provider"):
        lg = logging.getLogger(name)
        for h in lg.handlers:
            h.addFilter(_NoTraceback())


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage().split("\n", 1)[0]
            self.records.append(f"log {record.name}: {msg}"[:500])
        except Exception:  # pragma: no cover - never let logging break a step
            pass


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="Classic auth URL, e.g. http://127.0.0.1:8000/api")
    p.add_argument("--token", required=True, help="API token passed to the SDK (loginWithToken body)")
    p.add_argument("--instance", default=None, help="hub/group/project (default: the SDK's choice)")
    p.add_argument("--backend", default="fake_manila", help="backend name (default fake_manila)")
    p.add_argument("--out", default=None, help="write the JSON results here")
    p.add_argument("--step-timeout", type=float, default=90.0, help="seconds per step (default 90)")
    p.add_argument("--job-timeout", type=float, default=60.0, help="job wait timeout (default 60)")
    p.add_argument("--total-timeout", type=float, default=900.0, help="whole run budget (default 900)")
    p.add_argument(
        "--markers",
        action="store_true",
        help="send GET <server>/__step__?name=<step> before each step (for correlating server logs)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failed steps")
    return p


class Runner:
    def __init__(self, args: argparse.Namespace, driver: str, sdk: dict[str, str]) -> None:
        self.args = args
        self.driver = driver
        self.sdk = sdk
        self.results: list[dict[str, Any]] = []
        self.failed: set[str] = set()
        self.passed: set[str] = set()
        self.started = time.time()
        self.deadline = self.started + args.total_timeout
        self.extra: dict[str, Any] = {}
        parsed = urllib.parse.urlparse(args.url)
        self._marker_base = f"{parsed.scheme}://{parsed.netloc}"
        signal.signal(signal.SIGALRM, self._on_alarm)
        quiet_sdk_tracebacks()
        print(f"== {driver}: {json.dumps(sdk)} url={args.url}", flush=True)

    @staticmethod
    def _on_alarm(signum: int, frame: Any) -> None:
        raise StepTimeout()

    def _marker(self, name: str) -> None:
        if not self.args.markers:
            return
        url = f"{self._marker_base}/__step__?" + urllib.parse.urlencode({"name": name})
        try:
            urllib.request.urlopen(url, timeout=2).read()
        except Exception:
            pass

    def step(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        optional: bool = False,
        needs: tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> Any:
        """Run fn; its return value (str or anything) becomes the detail. Returns fn's value or None."""
        rec: dict[str, Any] = {"step": name, "ok": False, "optional": optional}
        missing = [n for n in needs if n not in self.passed]
        t0 = time.time()
        value = None
        if missing:
            rec.update(skipped=True, error=f"skipped: needs {', '.join(missing)}")
        elif time.time() > self.deadline:
            rec.update(skipped=True, error="skipped: total time budget exhausted")
        else:
            self._marker(name)
            budget = min(timeout or self.args.step_timeout, max(1.0, self.deadline - time.time()))
            handler = _ListHandler()
            loggers = [logging.getLogger(n) for n in ("qiskit_ibm_runtime", "qiskit_ibm_provider")]
            for lg in loggers:
                lg.addHandler(handler)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # re-fire every 2 s after the first alarm in case SDK code swallows one
                signal.setitimer(signal.ITIMER_REAL, budget, 2.0)
                try:
                    value = fn()
                    rec["ok"] = True
                    if value is not None:
                        rec["detail"] = value if isinstance(value, str) else _short(value)
                except StepTimeout:
                    rec["error"] = f"StepTimeout: step did not finish within {budget:.0f}s"
                    rec["traceback"] = _tb_tail(sys.exc_info()[2])
                except Skip as exc:
                    rec.update(skipped=True, error=f"skipped: {exc}")
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    rec["error"] = _describe(exc)
                    rec["traceback"] = _tb_tail(exc.__traceback__)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0, 0)
                    for lg in loggers:
                        lg.removeHandler(handler)
            notes = []
            for w in caught:
                text = f"{w.category.__name__}: {w.message}"
                if "DeprecationWarning" in text or "PendingDeprecationWarning" in text:
                    continue
                notes.append(text[:500])
            notes += handler.records
            if notes:
                rec["warnings"] = list(dict.fromkeys(notes))[:10]
            if "detail" in rec and "error" in rec:
                del rec["detail"]
        rec["seconds"] = round(time.time() - t0, 3)
        (self.passed if rec["ok"] else self.failed).add(name)
        self.results.append(rec)
        self._print(rec)
        return value if rec["ok"] else None

    def _print(self, rec: dict[str, Any]) -> None:
        tag = "ok  " if rec["ok"] else ("SKIP" if rec.get("skipped") else "FAIL")
        opt = " (optional)" if rec["optional"] else ""
        text = rec.get("detail") if rec["ok"] else rec.get("error")
        print(f"[{tag}] {rec['step']}{opt} {rec['seconds']:.1f}s: {_one_line(text)}", flush=True)
        if not rec["ok"] and self.args.verbose and rec.get("traceback"):
            for line in rec["traceback"]:
                print(f"        {line}", flush=True)
        for w in rec.get("warnings", [])[:3]:
            print(f"        warning: {_one_line(w)}", flush=True)

    def finish(self) -> int:
        required = [r for r in self.results if not r["optional"]]
        req_fail = [r["step"] for r in required if not r["ok"]]
        opt_fail = [r["step"] for r in self.results if r["optional"] and not r["ok"]]
        summary = {
            "steps": len(self.results),
            "passed": sum(r["ok"] for r in self.results),
            "required": len(required),
            "required_failed": req_fail,
            "optional_failed": opt_fail,
            "ok": not req_fail,
            "seconds": round(time.time() - self.started, 1),
        }
        print(
            f"== {self.driver} summary: {summary['passed']}/{summary['steps']} steps ok; "
            f"required failed: {len(req_fail)} {req_fail}; optional failed: {opt_fail}; "
            f"{summary['seconds']}s",
            flush=True,
        )
        if self.args.out:
            doc = {
                "driver": self.driver,
                "sdk": self.sdk,
                "python": platform.python_version(),
                "url": self.args.url,
                "instance": self.args.instance,
                "backend": self.args.backend,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "summary": summary,
                "steps": self.results,
                **self.extra,
            }
            os.makedirs(os.path.dirname(os.path.abspath(self.args.out)), exist_ok=True)
            with open(self.args.out, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2, default=str)
        return 0 if not req_fail else 1


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__module__}.{type(exc).__name__}: {exc}"]
    status = getattr(exc, "status_code", None)
    if status is not None:
        parts.append(f"[status_code={status}]")
    cause = exc.__cause__ or exc.__context__
    depth = 0
    while cause is not None and depth < 3:
        c_status = getattr(cause, "status_code", None)
        parts.append(f"<- {type(cause).__name__}: {cause}" + (f" [status_code={c_status}]" if c_status else ""))
        cause = cause.__cause__ or cause.__context__
        depth += 1
    return " ".join(parts)[:2000]


def _tb_tail(tb: Any, n: int = 6) -> list[str]:
    frames = traceback.extract_tb(tb)[-n:]
    return [f"{_shorten_path(f.filename)}:{f.lineno} in {f.name}: {f.line}" for f in frames]


def _shorten_path(path: str) -> str:
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else os.path.basename(path)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except Exception:
        text = repr(value)
    return text[:800]


def _one_line(text: Any) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 300 else s[:297] + "..."


def backend_status_and_defaults_steps(run: Runner, be: Callable[[], Any], nb: Any) -> None:
    """The `status` and `defaults` steps, the same for every SDK's backend object."""

    def s_status() -> str:
        st = be().status()
        check(st.operational is True, f"operational={st.operational} status_msg={st.status_msg}")
        return f"operational={st.operational} status_msg={st.status_msg} pending_jobs={st.pending_jobs}"

    run.step("backend_status", s_status, needs=nb)

    def s_defaults() -> str:
        d = be().defaults()
        return f"defaults={'None' if d is None else type(d).__name__}"

    run.step("backend_defaults", s_defaults, needs=nb)


def counts_check(counts: dict[str, int], shots: int, nbits: int) -> str:
    """Sanity of a counts dict: totals to shots, keys are nbits-long bitstrings."""
    check(isinstance(counts, dict) and counts, f"empty counts: {counts!r}")
    total = sum(counts.values())
    check(total == shots, f"counts sum to {total}, expected {shots}: {counts}")
    for key in counts:
        check(
            isinstance(key, str) and len(key) == nbits and set(key) <= {"0", "1"},
            f"bad bitstring {key!r} (expected {nbits} bits): {counts}",
        )
    return f"counts={dict(sorted(counts.items(), key=lambda kv: -kv[1])[:4])}"
