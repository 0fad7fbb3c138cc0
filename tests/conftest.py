"""Shared fixtures: the emulator and the proxy as real uvicorn servers on free loopback ports."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import Settings, load_settings
from proxy.emulator import DEMO_API_KEY, DEMO_CRN, Emulator, EmulatorConfig, create_emulator_app
from proxy.logs import JsonFormatter
from proxy.serving import BackgroundServer
from proxy.wire import server_options

from .pgserver import pg_url, postgres  # noqa: F401  (fixtures: a real PostgreSQL server)


@dataclass
class Running:
    server: BackgroundServer
    app: Any

    @property
    def url(self) -> str:
        return self.server.url


@dataclass
class EmulatorHandle(Running):
    @property
    def state(self) -> Emulator:
        return self.app.state.emulator

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    def api_requests(self) -> list[dict[str, Any]]:
        """Requests that reached the new API (IAM token calls are not recorded)."""
        return [r for r in self.state.requests if r["path"].startswith("/api/")]

    def clear(self) -> None:
        self.state.requests.clear()


def wait_until_ok(url: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail with the process output if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}):\n{proc.stdout.read() if proc.stdout else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """SIGTERM, as docker / the kubelet / Ctrl-C do; SIGKILL if it does not exit in time. Its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # With its group when it leads one (start_new_session): a worker left behind holds the output open.
        try:
            group = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            group = False
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        out, _ = proc.communicate(timeout=30)
    return out or ""


def start_emulator(config: EmulatorConfig | None = None) -> EmulatorHandle:
    app = create_emulator_app(config or EmulatorConfig())
    return EmulatorHandle(BackgroundServer(app).start(), app)


def proxy_settings(emulator_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "api_key": DEMO_API_KEY,
        "service_crn": DEMO_CRN,
        "upstream_url": emulator_url + "/api",
        "iam_url": emulator_url + "/identity/token",
        "usage_db": "",
    }
    base.update(overrides)
    return load_settings(None, **base)


def start_proxy(settings: Settings, **kw: Any) -> Running:
    app = create_app(settings, **kw)
    return Running(BackgroundServer(app, access_log=False, **server_options(settings)).start(), app)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator()
    yield handle
    handle.server.stop()


@pytest.fixture(scope="module")
def proxy(emulator: EmulatorHandle) -> Iterator[Running]:
    running = start_proxy(proxy_settings(emulator.url))
    yield running
    running.server.stop()


@pytest.fixture
def client(proxy: Running, emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    emulator.clear()
    with httpx.Client(base_url=proxy.url, timeout=20, trust_env=False) as c:
        yield c


@pytest.fixture
def make_proxy(emulator: EmulatorHandle) -> Iterator[Callable[..., Running]]:
    """Start extra proxies with setting overrides; all are stopped after the test."""
    started: list[Running] = []

    def make(**overrides: Any) -> Running:
        running = start_proxy(proxy_settings(emulator.url, **overrides))
        started.append(running)
        return running

    yield make
    for r in started:
        r.server.stop()


@contextmanager
def attached(handler: logging.Handler, level: int) -> Iterator[None]:
    """Attach a handler to the proxy's logger for the duration, at the given level."""
    logger = logging.getLogger("qiskit_classic_proxy")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the proxy logs (all levels) during the test, as text."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    with attached(handler, logging.DEBUG):
        yield buf


@pytest.fixture
def json_logs() -> Iterator[list[str]]:
    """The proxy's log records at INFO and above, each formatted as the JSON log line it would be."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    with attached(handler, logging.INFO):
        yield lines
