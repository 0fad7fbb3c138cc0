"""ASGI plumbing the request path shares: read a body within limits, send a whole answer."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .call import Call, Reply
from .errors import BadRequest, PayloadTooLarge, ProxyError

if TYPE_CHECKING:
    from .classic.bodystream import Spooler


async def read_body(call: Call, receive: Callable, limit: int, spooler: Spooler | None = None) -> Any:
    """The request body as bytes; with a `spooler`, a large one comes back as a SpooledBody."""
    declared = call.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes (QCP_MAX_BODY_BYTES)")
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise BadRequest("client disconnected while sending the body", code="client_disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes (QCP_MAX_BODY_BYTES)")
            if spooler is not None:
                spooler.add(chunk)
            else:
                chunks.append(chunk)
            if not msg.get("more_body"):
                return spooler.finish() if spooler is not None else b"".join(chunks)
    except BaseException:
        if spooler is not None:
            spooler.close()
        raise


async def send_reply(call: Call, reply: Reply, send: Callable) -> None:
    hdrs = list(reply.headers)
    if reply.content_type and reply.body:
        hdrs.append((b"content-type", reply.content_type))
    hdrs.append((b"content-length", str(len(reply.body)).encode()))
    hdrs.append((b"x-request-id", call.request_id.encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": hdrs})
    await send({"type": "http.response.body", "body": reply.body})


async def send_error(call: Call, err: ProxyError, send: Callable) -> None:
    hdrs = [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send_reply(call, Reply(err.status, err.render(call.request_id), hdrs), send)


async def until_disconnect(receive: Callable) -> None:
    """Returns when the caller has gone (or the response is complete): uvicorn says http.disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


class HangupWatch:
    """Cancels the current task when the caller hangs up while it waits (a slow upstream GET).

    Armed only after `after` seconds (at most a quarter of that later), so quick answers cost a
    dict entry, not a task nor a timer of their own: one sweep timer per event loop, running
    only while watches wait, arms the ones that have waited long enough. Use only where nothing
    else reads `receive` meanwhile; `stop()` when the wait is over. A cancel caused by it is
    recognised by `fired`.
    """

    __slots__ = ("_done", "_due", "_watcher", "fired", "receive", "task")

    def __init__(self, receive: Callable, after: float) -> None:
        loop = asyncio.get_running_loop()  # (a getpid() syscall: once, then current_task(loop) needs none)
        self.receive = receive
        self.task = asyncio.current_task(loop)
        self.fired = False
        self._done = False
        self._watcher: asyncio.Future[None] | None = None
        self._due = loop.time() + after
        sweep = _SWEEPS.get(loop)
        if sweep is None:
            sweep = _SWEEPS[loop] = _Sweep(loop)
        sweep.add(self, after)

    def _start(self) -> None:
        if not self._done:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await until_disconnect(self.receive)
        if not self._done and self.task is not None:
            self.fired = True
            self.task.cancel()

    def stop(self) -> None:
        self._done = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.fired and self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()  # the cancel was ours and is handled (Python 3.11+)
        # The sweep may hold this watch until its next round: let the request's task and its
        # receive() go now.
        self.task = self.receive = None  # type: ignore[assignment]


class _Sweep:
    """The waiting HangupWatches of one event loop and the one timer that arms them."""

    __slots__ = ("loop", "timer", "watches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: list[HangupWatch] = []  # in order of due time (one `after` per caller)
        self.timer: asyncio.TimerHandle | None = None

    def add(self, watch: HangupWatch, after: float) -> None:
        self.watches.append(watch)
        if self.timer is None:
            self.timer = self.loop.call_later(after, self.run, after / 4)

    def run(self, tick: float) -> None:
        now = self.loop.time()
        watches = self.watches
        i = 0
        for w in watches:
            if w._due > now:
                break
            i += 1
            w._start()
        kept = [w for w in watches[i:] if not w._done]
        self.watches = kept
        if kept:
            self.timer = self.loop.call_later(max(tick, kept[0]._due - now), self.run, tick)
        else:
            self.timer = None
            _SWEEPS.pop(self.loop, None)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()
