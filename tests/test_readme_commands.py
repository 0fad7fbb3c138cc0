"""The README's shell commands, copied in order into a fresh shell after the quick start (issue #13).

Every ```sh block of README.md runs, in README order, in one real `bash` (exports and `cd` carry
over), in a temp copy of the repository whose `.venv` is a symlink to this interpreter's venv
(`sys.prefix`), with no venv on `PATH`, no `QCP_*`/`QISKIT_IBM_*` variables and a fresh `HOME` —
so a bare `qiskit-classic-proxy` is "command not found" here as in a new terminal. The rules, each
visible in the README as an HTML comment before the block it applies to:

- `<!-- readme-test: background (...) -->`: the quick start. Its command after the last `&&` (the
  install before it is what made `.venv`) is started in the background — with no credentials that
  is the demo — before the other blocks, and stopped with Ctrl-C (SIGINT) at the end.
- `<!-- readme-test: skip (REASON) -->`: not run (IBM credentials, the full test suite).
  `SKIPPED_BLOCKS` pins them, so a new skipped block is a visible change to this file.
- `8080` is rewritten to a free port in every line (and `QCP_PORT` set to it for the demo): the
  README's port may be taken on the machine running the tests.
- `DEMO_RECORD` (`/tmp/qcp-demo/usage.sqlite3`) stands for the usage record the demo names in its
  banner; it is replaced by the path printed there.
- A whole-line comment right after a command is its expected output: the pieces between `...` must
  appear in its output in that order (text after three spaces is a remark). A trailing
  `# exit N` gives the expected exit code; otherwise it is 0. No output may hold a traceback.

Lines whose feature another #13 branch is building are in `PENDING` (non-strict xfail).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from proxy.serving import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_RECORD = "/tmp/qcp-demo/usage.sqlite3"
README_PORT = "8080"
SESSION_TIMEOUT = 60.0  # the whole session, every line together
DEMO_START_TIMEOUT = 30.0
CURL_MAX_TIME = 15  # written to the session's ~/.curlrc: no curl line can hang the test

#: Every skipped block and why, in README order. A new one must be added here, deliberately.
SKIPPED_BLOCKS = [
    "the full test suite, which runs this test",
    "needs IBM credentials",
    "needs IBM credentials and your legacy code",
    "needs IBM credentials: a saved account",
]

#: README lines (by a fragment of the command) whose feature is being built on another #13 branch.
#: Remove an entry once that branch is merged and the line passes.
PENDING = {
}

MARKER = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(?:\((.*?)\))?\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
EXIT = re.compile(r"#.*\bexit (\d+)\b")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    lines: list[str]
    marker: str | None = None  # "background", "skip", or None (run)
    reason: str = ""


@dataclass
class Command:
    text: str
    line: int
    expect: list[str] = field(default_factory=list)  # fragments, in order
    exit_code: int = 0

    @property
    def label(self) -> str:
        return f"L{self.line}: {self.text.splitlines()[0][:70]}"


def readme_blocks(text: str) -> list[Block]:
    """Fenced blocks with the readme-test marker on the nearest non-blank line before them."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        block = Block(m.group(1), start + 1, lines[start + 1 : j])
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (mm := MARKER.search(lines[k])):
            block.marker, block.reason = mm.group(1), (mm.group(2) or "").strip()
        blocks.append(block)
        i = j + 1
    return blocks


def commands(block: Block) -> list[Command]:
    """Logical command lines (backslash continuations joined), each with its expected output."""
    out: list[Command] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.lstrip().startswith("#"):  # a remark before a command
            i += 1
            continue
        first = i
        parts = [line]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        cmd = Command("\n".join(parts), block.line + first + 1)
        if m := EXIT.search(parts[-1]):
            cmd.exit_code = int(m.group(1))
        while i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#"):
            i += 1
            shown = re.split(r"\s{3,}", lines[i].lstrip()[1:].strip(), maxsplit=1)[0]
            cmd.expect += [f.strip() for f in shown.split("...") if f.strip()]
        out.append(cmd)
        i += 1
    return out


BLOCKS = readme_blocks(README.read_text())
SH_BLOCKS = [b for b in BLOCKS if b.lang == "sh"]
RUN_COMMANDS = [c for b in SH_BLOCKS if b.marker is None for c in commands(b)]


def _copy_repo(dest: Path) -> None:
    """The tracked files (what a clone has), else the tree without venvs and caches."""
    try:
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=20
        ).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__"))
        return
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _fresh_env(home: Path, port: int) -> dict[str, str]:
    """A new terminal's environment: no venv on PATH, no proxy settings or credentials."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and d != venv_bin and not (Path(d) / "qiskit-classic-proxy").exists()
    ]
    drop = ("QCP_", "QISKIT_IBM_", "VIRTUAL_ENV", "PYTHON")
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    # TMPDIR under the test's home: the demo's usage record folder does not pile up in /tmp.
    env.update(
        PATH=os.pathsep.join(path), HOME=str(home), TMPDIR=str(home), QCP_PORT=str(port), NO_PROXY="127.0.0.1,localhost"
    )
    return env


@dataclass
class Session:
    results: dict[int, tuple[int | None, str]]  # command line -> (exit code or None if not reached, output)
    demo_output: str
    port: int
    record: str | None


def _demo_record(banner: str) -> str | None:
    """The usage record the demo names: the `--db` of the report command it prints, else a *.sqlite3 path."""
    m = re.search(r"report --db ('[^']+'|\"[^\"]+\"|\S+)", banner) or re.search(r"(/\S+\.sqlite3)\b", banner)
    return m.group(1).strip("'\"") if m else None


def _run_session(work: Path, env: dict[str, str], port: int, demo_output: str) -> Session:
    """All runnable lines in one bash, each line's output and exit code in its own files."""
    record = _demo_record(demo_output)
    results_dir = work.parent / "results"
    results_dir.mkdir()
    script = ["set +e"]
    for c in RUN_COMMANDS:
        text = c.text.replace(README_PORT, str(port))
        if record:
            text = text.replace(DEMO_RECORD, record)
        out, rc = results_dir / f"{c.line}.out", results_dir / f"{c.line}.rc"
        script += ["{ " + text, f'}} >"{out}" 2>&1 </dev/null', f'echo $? >"{rc}"']
    (work.parent / "session.sh").write_text("\n".join(script) + "\n")
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc", str(work.parent / "session.sh")],
        cwd=work, env=env, start_new_session=True,
    )
    try:
        proc.wait(timeout=SESSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    results: dict[int, tuple[int | None, str]] = {}
    for c in RUN_COMMANDS:
        rc_file, out_file = results_dir / f"{c.line}.rc", results_dir / f"{c.line}.out"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        results[c.line] = (rc, out_file.read_text(errors="replace") if out_file.exists() else "")
    return Session(results, demo_output, port, record)


def _wait_for_demo(demo: subprocess.Popen[bytes], port: int, log: Path, start_cmd: str) -> None:
    """Until the proxy answers /healthz on the port and the banner is out (it ends with "Ctrl-C")."""
    deadline = time.monotonic() + DEMO_START_TIMEOUT
    while True:
        if demo.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"`{start_cmd}` did not start the demo (exit {demo.poll()}):\n{log.read_text()}")
        try:
            up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            up = False
        if up and "ctrl-c" in log.read_text(errors="replace").lower():
            return
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as the demo's banner says; SIGKILL to the group if it does not stop in time."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "qiskit-classic-proxy").exists(), (
        f"run the tests from the venv the README creates ({venv} has no bin/qiskit-classic-proxy)"
    )
    base = tmp_path_factory.mktemp("readme")
    work, home = base / "repo", base / "home"
    work.mkdir()
    home.mkdir()
    _copy_repo(work)
    (work / ".venv").symlink_to(venv, target_is_directory=True)
    (home / ".curlrc").write_text(f"max-time = {CURL_MAX_TIME}\n")
    port = free_port()
    env = _fresh_env(home, port)
    (start,) = [b for b in SH_BLOCKS if b.marker == "background"]
    start_cmd = "\n".join(start.lines).split("&&")[-1].strip()
    log = base / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", start_cmd],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_demo(demo, port, log, start_cmd)
        result = _run_session(work, env, port, log.read_text(errors="replace"))
    finally:
        _stop(demo)
    result.demo_output = log.read_text(errors="replace")
    yield result


def test_block_rules_expected_output_and_exit_codes() -> None:
    """The rules of the module docstring, on a small README."""
    text = (
        "<!-- readme-test: skip (needs IBM credentials) -->\n```sh\nexport QCP_API_KEY=...\n```\n\n"
        "```sh\n# a remark\ncurl -s http://x \\\n     -d '{}'\n# {\"id\":\"...\",\"a\":1}   (a remark)\n"
        "scan examples   # exit 1: findings\n```\n"
    )
    skip, run = readme_blocks(text)
    assert (skip.marker, skip.reason, run.marker) == ("skip", "needs IBM credentials", None)
    curl, scan = commands(run)
    assert (curl.text, curl.line, curl.expect, curl.exit_code) == (
        "curl -s http://x \\\n     -d '{}'", 8, ['{"id":"', '","a":1}'], 0
    )
    assert (scan.expect, scan.exit_code) == ([], 1)


def test_the_quick_start_is_the_install_then_start() -> None:
    (start,) = [b for b in SH_BLOCKS if b.marker == "background"]
    assert start.lines == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/qiskit-classic-proxy start"
    ]


def test_skipped_blocks_are_the_known_ones() -> None:
    """A skip marker cannot silently swallow a new block: each one is listed in SKIPPED_BLOCKS."""
    assert [b.reason for b in SH_BLOCKS if b.marker == "skip"] == SKIPPED_BLOCKS
    assert {b.marker for b in BLOCKS} <= {None, "skip", "background"}
    assert all(b.lang == "sh" for b in BLOCKS if b.marker), "a readme-test marker must precede a ```sh block"
    assert len(RUN_COMMANDS) >= 10


def test_shell_blocks_are_sh() -> None:
    """Only ```sh blocks run: a command block under another name would escape this test."""
    assert not [b.line for b in BLOCKS if b.lang in ("bash", "shell", "console", "zsh")]


COMMAND_WORD = re.compile(
    r"(?<![\w./\[-])(qiskit-classic-proxy (?=--|serve|start|routes|demo|check|config|explain|report|scan|ca\b)"
    r"|pip3? install|pytest\b|ruff check)"
)


def test_every_command_calls_the_venv_by_path() -> None:
    """The venv is never activated: `qiskit-classic-proxy`, pip, pytest and ruff are called as `.venv/bin/...`
    everywhere in the README: in blocks (skipped ones too), transcripts and inline code."""
    text = README.read_text()
    bare = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in COMMAND_WORD.finditer(line):
            if not line[: m.start()].endswith(".venv/bin/") and "-m pytest" not in line[m.start() - 3 : m.end()]:
                bare.append(f"L{n}: {line.strip()[:100]}")
    assert not bare, "commands not called as .venv/bin/...:\n" + "\n".join(bare)


def test_the_demo_started_and_stopped_cleanly(session: Session) -> None:
    assert "Traceback" not in session.demo_output, session.demo_output


@pytest.mark.parametrize(
    "cmd",
    [
        pytest.param(
            c,
            id=c.label,
            marks=[
                pytest.mark.xfail(reason=f"pending: {why}", strict=False)
                for key, why in PENDING.items()
                if key in c.text
            ],
        )
        for c in RUN_COMMANDS
    ],
)
def test_readme_command(session: Session, cmd: Command) -> None:
    rc, output = session.results[cmd.line]
    assert rc is not None, f"not reached within {SESSION_TIMEOUT} s (an earlier line hung?)"
    assert "Traceback (most recent call last)" not in output, output
    assert rc == cmd.exit_code, f"exit {rc}, README says {cmd.exit_code}:\n{output}"
    pos = 0
    for fragment in cmd.expect:
        fragment = fragment.replace(README_PORT, str(session.port))
        found = output.find(fragment, pos)
        assert found >= 0, f"expected {fragment!r} (README's shown output, in order) in:\n{output}"
        pos = found + len(fragment)
