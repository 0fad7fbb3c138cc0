"""proxy/logs.py: the access log is batched on the event loop, with the same lines in the same order."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time

import pytest

from proxy.call import Call
from proxy.logs import BufferedStreamHandler, JsonFormatter, TextFormatter, access_log, log_access


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger("qiskit_classic_proxy.test_logs")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def test_lines_logged_on_the_loop_are_written_in_one_batch_after_the_interval() -> None:
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler)

    async def main() -> tuple[str, str]:
        for i in range(5):
            log.info("line %d", i)
        before = out.getvalue()
        await asyncio.sleep(0.2)
        return before, out.getvalue()

    before, after = asyncio.run(main())
    assert before == ""  # nothing written per request...
    assert after == "".join(f"line {i}\n" for i in range(5))  # ...then everything, in order


def test_a_full_batch_is_written_at_once_and_lines_off_the_loop_immediately() -> None:
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=60, batch=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler)

    async def main() -> str:
        for i in range(4):
            log.info("b%d", i)
        return out.getvalue()

    assert asyncio.run(main()) == "b0\nb1\nb2\n"
    handler.flush()  # what logging.shutdown() does at exit
    assert out.getvalue() == "b0\nb1\nb2\nb3\n"
    log.info("sync")  # no running loop: written at once
    assert out.getvalue().endswith("b3\nsync\n")


def test_access_line_text_is_unchanged() -> None:
    """Made without Logger.info (no findCaller): the formatted line is what it was."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    access_log.addHandler(keep)
    old = access_log.level
    access_log.setLevel(logging.INFO)
    try:
        call = Call(request_id="rid-1", method="GET", path="/jobs/x", status=200, action="forward",
                    upstream="GET /v1/jobs/x", caller="ci")
        log_access(call)
    finally:
        access_log.removeHandler(keep)
        access_log.setLevel(old)
    (r,) = records
    line = TextFormatter().format(r)
    assert line.endswith(" INFO qiskit_classic_proxy.access: GET (unmatched) forward -> GET /v1/jobs/x 200 "
                         f"{r.args[4]:.1f}ms caller=ci rid=rid-1")
    assert r.fields["request_id"] == "rid-1" and r.fields["status"] == 200  # type: ignore[attr-defined]
    reference = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert line == reference.format(r)  # the cached timestamp is the standard one


def test_a_new_event_loop_gets_its_own_flush() -> None:
    """Regression: a timer left by a finished loop must not keep later lines waiting."""
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=0.02)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler)

    async def first() -> None:
        log.info("one")  # the loop ends before its flush is due

    async def second() -> str:
        log.info("two")
        await asyncio.sleep(0.1)
        return out.getvalue()

    asyncio.run(first())
    assert asyncio.run(second()) == "one\ntwo\n"
    log.info("three")
    handler.close()
    assert out.getvalue() == "one\ntwo\nthree\n"


def test_a_line_from_another_thread_is_written_at_once_while_a_flush_is_pending() -> None:
    """The pending-flush shortcut (no get_running_loop per line) is for the main thread's loop only."""
    import threading

    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=60)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler)

    async def main() -> tuple[str, str]:
        log.info("queued")  # arms the flush timer on this loop
        log.info("queued too")  # the shortcut: appended behind it
        t = threading.Thread(target=log.info, args=("from a thread",))
        t.start()
        t.join(5)
        return out.getvalue(), "".join(handler._lines)

    written, waiting = asyncio.run(main())
    assert written == "queued\nqueued too\nfrom a thread\n"  # the thread's line flushed the batch, in order
    assert waiting == ""
    log.info("after")  # the loop is gone: its stale timer must not hold this line
    assert out.getvalue().endswith("from a thread\nafter\n")


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_the_access_line_fast_path_writes_what_the_record_path_writes(
    formatter: type[logging.Formatter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """log_access formats its line directly under configure()'s set-up; a filter forces the record path.
    Both must write the same line (timestamps aside)."""
    parent = logging.getLogger("qiskit_classic_proxy")
    saved = parent.handlers[:], parent.level, parent.propagate
    out = io.StringIO()
    handler = BufferedStreamHandler(out)
    handler.setFormatter(formatter())
    parent.handlers[:] = [handler]
    parent.setLevel(logging.INFO)
    monkeypatch.setattr(time, "perf_counter", lambda: 101.25)
    call = Call(request_id="rid-9", method="GET", path="/jobs/x", status=200, action="forward",
                upstream="GET /v1/jobs/x", caller="ci", sdk="qiskit-ibm-runtime/0.40.1", started=100.0)
    try:
        log_access(call)  # no running loop: written at once
        fast = out.getvalue()
        handler.addFilter(lambda record: True)
        log_access(call)
        slow = out.getvalue()[len(fast):]
    finally:
        parent.handlers[:], parent.level, parent.propagate = saved
    assert fast.endswith("\n") and slow.endswith("\n")
    stamp = re.compile(r"^\S+ \S+ |\"ts\":\"[^\"]+\"")
    assert stamp.sub("", fast) == stamp.sub("", slow), (fast, slow)
    assert "rid-9" in fast and ("1250.0ms" in fast or '"ms":1250.0' in fast)
