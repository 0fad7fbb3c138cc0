"""Run an ASGI app on a real uvicorn server in a background thread.

Used by `qiskit-classic-proxy demo` (emulator + proxy in one process) and by the tests, which
talk real HTTP over loopback instead of calling the app in-process.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just said was free (racy by nature, good enough on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """A uvicorn server on its own thread and event loop; `url` is its base URL."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, **config: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        self.config = uvicorn.Config(app, host=self.host, port=self.port, **config)
        self.server = uvicorn.Server(self.config)
        # A thread cannot install signal handlers; the owner stops us via should_exit.
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {self.port} did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout)


@contextmanager
def serve(
    app: Any, host: str = "127.0.0.1", port: int | None = None, **config: Any
) -> Iterator[BackgroundServer]:
    """Context manager form of BackgroundServer."""
    server = BackgroundServer(app, host=host, port=port, **config).start()
    try:
        yield server
    finally:
        server.stop()


def listen_error(host: str, port: int | None, flag: str = "--port") -> str | None:
    """Why `host:port` cannot be listened on, as one line naming the flag to change; None if it can.

    Bound (and closed) the way uvicorn binds, before anything starts: a busy port is then one clear
    line instead of uvicorn's errno after the app's start-up work. Port 0 or None: any port, fine.
    """
    if not port:
        return None
    bare = host.strip("[]")
    shown = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
    try:
        with socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((bare, port))
    except socket.gaierror as exc:
        return f"cannot listen on {shown}: unknown host {bare!r} ({exc.strerror})"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"cannot listen on {shown}: address already in use (another proxy or demo running? choose {flag})"
        return f"cannot listen on {shown}: {(exc.strerror or str(exc)).lower()}"
    return None
