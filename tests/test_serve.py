"""`serve` as a real process: one worker and several, graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, stop_process, wait_until_ok
from .pgserver import PostgresServer


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_forwards_and_stops_cleanly(emulator: EmulatorHandle, workers: int) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
        QCP_USAGE_DB="",
        QCP_CLIENT_TOKENS="ci=ci-client-token-1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", str(workers),
         "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(base + "/readyz", proc)
        with httpx.Client(base_url=base, timeout=10) as c:
            token = c.post("/api/users/loginWithToken", json={"apiToken": "ci-client-token-1"}).json()["id"]
            # Access tokens are signed, not stored: whichever worker answers accepts them.
            statuses = {c.get("/runtime/backends", headers={"X-Access-Token": token}).status_code for _ in range(20)}
            assert statuses == {200}
            assert c.get("/runtime/backends").status_code == 401
    finally:
        out = stop_process(proc)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so "killed by SIGTERM" is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out or workers > 1
    assert DEMO_API_KEY not in out
    assert "ci-client-token-1" not in out
    assert '"route":"GET /backends"' in out


def test_serve_with_workers_shares_one_intercepting_ca(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """Each worker listens on the intercept port (SO_REUSEPORT); the CA is created once, for all."""
    port, iport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
               QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB="", QCP_CA_DIR=str(tmp_path / "ca"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", "2", "--intercept-port", str(iport)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca" / "qcp-ca.pem"))
        with httpx.Client(proxy=f"http://127.0.0.1:{iport}", verify=ctx, trust_env=False, timeout=10) as c:
            statuses = set()
            for _ in range(12):  # fresh connections: the kernel spreads them over both workers
                statuses.add(c.get("https://api.quantum-computing.ibm.com/api/version").status_code)
                c.close()
                c = httpx.Client(proxy=f"http://127.0.0.1:{iport}", verify=ctx, trust_env=False, timeout=10)
        assert statuses == {200}
    finally:
        stop_process(proc)


def test_serve_names_a_ca_dir_it_cannot_use(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_CA_DIR=str(blocker / "ca"))
    r = subprocess.run([sys.executable, "-m", "proxy", "serve", "--intercept-port", "0"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "QCP_CA_DIR" in r.stderr and "Traceback" not in r.stderr


#: Loaded by every process of the server below (PYTHONPATH): a worker's shutdown reaches the shared
#: store's close() in the loop turn its sync task finishes a round, the moment the bug needs.
_CLOSE_AS_A_ROUND_ENDS = '''
import asyncio
from proxy import store

_sync, _close = store.PostgresStore._sync, store.PostgresStore.close


async def _sync_then_tell(self):
    await _sync(self)
    ended = getattr(self, "_round_ended", None)
    if ended is not None:
        ended.set()


async def _close_as_a_round_ends(self):
    self._round_ended = asyncio.Event()
    await self._round_ended.wait()
    await _close(self)


store.PostgresStore._sync = _sync_then_tell
store.PostgresStore.close = _close_as_a_round_ends
'''


def test_sigterm_stops_every_worker_even_as_a_shared_state_round_ends(
    emulator: EmulatorHandle, pg_url: str, tmp_path: Path
) -> None:
    """Regression: a `serve --workers 2` worker on PostgreSQL sometimes ignored SIGTERM for good (seen
    in tests/test_replicas.py under load). Its shutdown cancelled the store's sync task as a round
    ended; Python 3.11's wait_for dropped that cancel and the lifespan shutdown waited forever."""
    (tmp_path / "sitecustomize.py").write_text(_CLOSE_AS_A_ROUND_ENDS)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "PROMETHEUS_"))}
    env.update(
        QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB=pg_url, QCP_METRICS_DIR=str(tmp_path / "m"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
    finally:
        out = stop_process(proc, timeout=60)  # the whole group is killed if it does not stop
    # The output is read to its end: every process that shared it (both workers) is gone.
    assert proc.returncode in (0, -signal.SIGTERM), f"did not stop on SIGTERM ({proc.returncode}):\n{out[-3000:]}"
    assert out.count("Application shutdown complete") == 2, out[-3000:]


def _server_processes(postmaster: int) -> list[int]:
    """The PostgreSQL postmaster and its children (backends, checkpointer...), from /proc."""
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    return pids


def test_sigterm_stops_every_worker_while_the_database_accepts_and_never_answers(
    emulator: EmulatorHandle, postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """Regression (same bug, the other way in): with PostgreSQL frozen (SIGSTOP: connections open,
    no answer, as a hung server or a partition without resets), the usage record's write blocked
    for good holding its lock, and the worker's shutdown waited on that lock: SIGTERM never ended it.
    Now the shutdown gives the last write a bounded time, logs what it could not write, and exits."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "PROMETHEUS_"))}
    env.update(
        QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB=pg_url, QCP_METRICS_DIR=str(tmp_path / "m"),
        QCP_CLIENT_TOKENS="ci=ci-client-token-1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    frozen: list[int] = []
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        postmaster = int((postgres.datadir / "postmaster.pid").read_text().split()[0])
        frozen = _server_processes(postmaster)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        # Counted after the freeze, so some write is still to come when SIGTERM arrives.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20, trust_env=False) as c:
            for _ in range(10):
                c.get("/runtime/backends", headers={"Authorization": "Bearer ci-client-token-1"})
        out = stop_process(proc, timeout=60)  # the whole group is killed if it does not stop
    finally:
        if proc.poll() is None:
            stop_process(proc, timeout=60)
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert proc.returncode in (0, -signal.SIGTERM), f"did not stop on SIGTERM ({proc.returncode}):\n{out[-3000:]}"
    assert "could not be written" in out, out[-3000:]  # said, not silently dropped
    assert postgres.password not in out
