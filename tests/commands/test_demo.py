"""`demo` as a user runs it (the real console script): the same settings as `serve`, a usage record
it names and a `report` command that works after it stops, one line for a busy port."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.serving import free_port

from ..conftest import wait_until_ok

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("qiskit-classic-proxy")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's shell without QCP_* settings; temp files (the demo's record) under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(TMPDIR=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), **extra)
    return env


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    banner: list[str]
    base: str
    err: Path

    def line(self, needle: str) -> str:
        found = [x for x in self.banner if needle in x]
        assert found, "\n".join(self.banner)
        return found[0]

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Ctrl-C (SIGINT) by default, as a user stops it; its remaining stdout."""
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=30)
        return out


@contextmanager
def running_demo(tmp_path: Path, *args: str, **env: str) -> Iterator[Demo]:
    """The demo with --seconds as the bound, its banner read up to 'Ctrl-C to stop.'."""
    assert CLI.exists(), f"the console script is not installed next to {sys.executable}"
    port = free_port()
    err = tmp_path / "demo.stderr"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [str(CLI), "demo", "--port", str(port), "--seconds", "90", *args],
            stdout=subprocess.PIPE, stderr=err_file, text=True, env=env_for(tmp_path, **env), cwd=tmp_path,
        )
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        for line in proc.stdout:
            banner.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop."):
                break
        assert banner and banner[-1].startswith("Ctrl-C"), "\n".join(banner) + err.read_text()
        proxy_line = next(x for x in banner if x.strip().startswith("proxy:"))
        base = proxy_line.split()[1]
        yield Demo(proc, banner, base, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_regression_demo_ignored_the_config_file_route_policies_and_client_tokens(tmp_path: Path) -> None:
    """A `policy = "gone"` route answered 200 in the demo while `explain` with the same file said 410."""
    config = tmp_path / "qcp.toml"
    config.write_text('client_tokens = ["ci=ci-demo-token-7"]\n[routes."GET /backends"]\npolicy = "gone"\n')
    explained = subprocess.run(
        [str(CLI), "explain", "GET", "/runtime/backends", "--config", str(config), "--format", "json"],
        capture_output=True, text=True, env=env_for(tmp_path), timeout=60,
    )
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["answer"]["status"] == 410, explained.stdout
    with running_demo(tmp_path, QCP_CONFIG=str(config)) as demo:
        token = {"X-Access-Token": "ci-demo-token-7"}
        with httpx.Client(base_url=demo.base, timeout=10, trust_env=False) as c:
            assert c.get("/runtime/backends", headers=token).status_code == 410
            assert c.get("/runtime/backends/fake_manila/status").status_code == 401
            assert c.get("/runtime/backends/fake_manila/status", headers=token).status_code == 200
        # The banner's own V1 example still runs (with one of the configured tokens), and says how to log in.
        assert "ran upstream as program 'sampler' version 2" in demo.line("V1 call translated:")
        assert "Client tokens are required" in "\n".join(demo.banner)
        out = demo.stop()
    assert demo.proc.returncode == 0
    assert "ci-demo-token-7" not in "\n".join(demo.banner) + out + demo.err.read_text()


def test_regression_demo_ignored_host_and_log_format(tmp_path: Path) -> None:
    """QCP_HOST and QCP_LOG_FORMAT (the settings serve reads) were replaced by 127.0.0.1 and text."""
    with running_demo(tmp_path, QCP_HOST="localhost", QCP_LOG_FORMAT="json") as demo:
        assert demo.base.startswith("http://localhost:"), demo.banner
        wait_until_ok(demo.base + "/healthz", demo.proc)
        assert httpx.get(demo.base + "/runtime/backends", timeout=10).status_code == 200
        demo.stop()
    lines = [x for x in demo.err.read_text().splitlines() if x.strip()]
    assert lines
    docs = [json.loads(x) for x in lines]  # every log line is JSON, uvicorn's too
    assert any(d.get("route") == "GET /backends" and d.get("status") == 200 for d in docs), lines


def report_command(demo: Demo) -> list[str]:
    """The command the banner prints, as the user would paste it."""
    line = demo.line(" report --db ")
    argv = shlex.split(line.strip())
    assert Path(argv[0]).resolve() == CLI.resolve() or argv[0] == "qiskit-classic-proxy", line
    return [str(CLI), *argv[1:]]


def test_regression_report_after_the_demo_said_no_usage_record(tmp_path: Path) -> None:
    """`report` right after the demo failed ('no usage record'): the demo now keeps one in a temp
    file it names, and the report command it prints lists the calls, after Ctrl-C too."""
    with running_demo(tmp_path) as demo:
        record = demo.line("Usage record:").split()[2]
        assert Path(record).parent.parent == tmp_path, record  # under TMPDIR: a fresh temp folder
        with httpx.Client(base_url=demo.base, timeout=10, trust_env=False) as c:
            for _ in range(3):
                assert c.get("/runtime/backends", headers={"User-Agent": "curl/8.5.0"}).status_code == 200
            assert c.get("/runtime/health").status_code == 410
        command = report_command(demo)
        # While it runs (another terminal): the record is written every second, the report sees it.
        for _ in range(100):
            live = subprocess.run([*command, "--format", "json"], capture_output=True, text=True,
                                  env=env_for(tmp_path), timeout=60, cwd=tmp_path)
            if live.returncode == 0 and any(d["endpoint"] == "GET /health" for d in json.loads(live.stdout)["in_use"]):
                break
        else:
            pytest.fail(f"the report never listed the calls while the demo ran: {live.stdout}{live.stderr}")
        demo.stop()
    assert demo.proc.returncode == 0
    r = subprocess.run([*command, "--format", "json"], capture_output=True, text=True,
                       env=env_for(tmp_path), timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {(d["client"], d["endpoint"]): d for d in json.loads(r.stdout)["in_use"]}
    assert rows[("curl", "GET /backends")]["count"] == 3, rows
    assert rows[("python-httpx", "GET /health")]["answered_410"] == 1, rows
    table = subprocess.run(command, capture_output=True, text=True, env=env_for(tmp_path), timeout=60, cwd=tmp_path)
    assert table.returncode == 0 and "GET /backends" in table.stdout, table.stdout + table.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_report_with_scan_after_the_demo_joins_the_examples(tmp_path: Path) -> None:
    """The README's walk-through: the demo, the examples' curl script, then `report --with-scan examples`."""
    with running_demo(tmp_path) as demo:
        script = subprocess.run(
            ["bash", str(ROOT / "examples" / "curl" / "jobs.sh")], capture_output=True, text=True, timeout=60,
            env={**env_for(tmp_path), "QCP_URL": demo.base, "NO_PROXY": "*"},
        )
        assert script.returncode == 0, script.stderr
        command = report_command(demo)
        demo.stop(signal.SIGTERM)  # `kill`, docker stop: the record is written out as for Ctrl-C
    assert demo.proc.returncode == 0
    r = subprocess.run([*command, "--with-scan", "examples", "--format", "json"], capture_output=True, text=True,
                       env=env_for(tmp_path), timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    findings = json.loads(r.stdout)["code"]["findings"]
    seen = {(f["path"], f["code"]) for f in findings if f["seen_in_traffic"]}
    assert ("examples/curl/jobs.sh", "QCP306") in seen, findings


def test_demo_keeps_an_explicit_usage_db_where_the_user_put_it(tmp_path: Path) -> None:
    with running_demo(tmp_path, QCP_USAGE_DB="mine.sqlite3") as demo:  # relative to the demo's folder
        assert demo.line("Usage record:").split()[2].rstrip(";") == str(tmp_path / "mine.sqlite3")
        command = report_command(demo)
        demo.stop()
    assert command[-2:] == ["--db", str(tmp_path / "mine.sqlite3")]
    assert not list(tmp_path.glob("qcp-demo-*"))
    r = subprocess.run(command, capture_output=True, text=True, env=env_for(tmp_path), timeout=60)
    assert r.returncode == 0 and "POST /jobs" in r.stdout, r.stdout + r.stderr  # the banner's own V1 call


def test_demo_with_usage_db_off_says_so(tmp_path: Path) -> None:
    with running_demo(tmp_path, QCP_USAGE_DB="") as demo:
        assert "Usage record: off" in demo.line("Usage record:")
        assert " report " not in "\n".join(demo.banner)
        demo.stop()
    assert not list(tmp_path.glob("qcp-demo-*"))


@contextmanager
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("flag", ["--port", "--emulator-port", "--intercept-port"])
def test_regression_demo_on_a_busy_port_printed_uvicorn_errno(tmp_path: Path, flag: str) -> None:
    """One line naming the address and what to do; nothing started, nothing else said."""
    with held_port() as port:
        args = ["--port", str(port)] if flag == "--port" else ["--port", str(free_port()), flag, str(port)]
        r = subprocess.run([str(CLI), "demo", *args, "--seconds", "5"], capture_output=True, text=True,
                           env=env_for(tmp_path), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"qiskit-classic-proxy: cannot listen on 127.0.0.1:{port}: address already in use "
        f"(another proxy or demo running? choose {flag})"
    ]
    assert not list(tmp_path.glob("qcp-demo-*"))  # nothing was started, not even the record


def test_regression_demo_port_default_beat_qcp_port(tmp_path: Path) -> None:
    """`demo --port` defaulted to 8080 once the demo took serve's settings, so QCP_PORT was ignored."""
    port = free_port()
    proc = subprocess.Popen(
        [str(CLI), "demo", "--seconds", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env_for(tmp_path, QCP_PORT=str(port)), cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C to stop."):
                break
        proxy_line = next(x for x in banner if x.strip().startswith("proxy:"))
        assert proxy_line.split()[1] == f"http://127.0.0.1:{port}", "".join(banner)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
