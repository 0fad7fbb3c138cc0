"""`qiskit-classic-proxy scan` as a user runs it: the console script, in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

TREE = Path(__file__).resolve().parents[1] / "scan" / "fixtures" / "tree"
EXPECTED = Path(__file__).resolve().parents[1] / "scan" / "fixtures" / "tree.expected.json"
SARIF_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0-rtm.5.json"
SCRIPT = Path(sys.executable).with_name("qiskit-classic-proxy")


def scan(*args: str, cwd: Path = TREE, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": str(columns), "NO_COLOR": "1", "HOME": str(cwd)}
    return subprocess.run([str(SCRIPT), "scan", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


def test_json_lists_the_known_findings_of_the_fixture_tree() -> None:
    r = scan(".", "--format", "json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    got = [[f["path"], f["cell"], f["line"], f["code"]] for f in doc["findings"]]
    assert sorted(got, key=str) == sorted(json.loads(EXPECTED.read_text()), key=str)
    assert doc["errors"] == [{"path": "lab/lab/broken.py", "error": "syntax error at line 4: invalid syntax"}]
    assert doc["files_scanned"] == 6
    assert doc["summary"]["findings"] == len(got)


def test_sarif_is_valid_sarif_2_1_0_and_names_every_rule() -> None:
    r = scan(".", "--format", "sarif")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(doc)
    run = doc["runs"][0]
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert {res["ruleId"] for res in run["results"]} <= set(rule_ids)
    assert len(run["results"]) == len(json.loads(EXPECTED.read_text()))
    first = run["results"][0]["locations"][0]["physicalLocation"]
    assert not first["artifactLocation"]["uri"].startswith("/")  # relative: code hosts resolve it
    assert run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"].startswith("lab/lab/broken.py")


@pytest.mark.parametrize("columns", [80, 120])
def test_table_is_grouped_by_file_and_fits_the_terminal(columns: int) -> None:
    r = scan(".", columns=columns)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    for path in ("scripts/submit_v1.py", "notebooks/Bell.ipynb", "ops/poll.sh", "lab/lab/client.py"):
        assert sum(line.startswith(path) for line in lines) == 1, path
    assert "\x1b[" not in r.stdout
    assert "not scanned: lab/lab/broken.py" in r.stdout
    assert lines[-1].startswith("20 finding(s) in 4 of 6 file(s)") or "finding(s) in 4 of 6 file(s)" in r.stdout


def test_select_ignore_and_output_file(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = scan(".", "--select", "QCP1", "--ignore", "QCP105", "--format", "json", "--output", str(out))
    assert r.returncode == 1 and r.stdout == ""
    codes = {f["code"] for f in json.loads(out.read_text())["findings"]}
    assert codes and codes <= {"QCP101", "QCP102", "QCP104"}


def test_clean_code_exits_0(tmp_path: Path) -> None:
    (tmp_path / "modern.py").write_text(
        'from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2\n'
        'service = QiskitRuntimeService(channel="ibm_quantum_platform")\n'
    )
    r = scan(".", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert "0 finding(s) in 0 of 1 file(s)" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["missing-dir"], "no such file or directory: missing-dir"), ([".", "--select", "QCP999"], "unknown rule code")],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    r = scan(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_diff_prints_changes_and_writes_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(TREE, tree)
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    r = scan("scripts", "--diff", cwd=tree)
    assert r.returncode == 1
    assert "--- a/scripts/submit_v1.py" in r.stdout
    assert '+with Session(service=service, backend="ibm_kyiv") as session:' not in r.stdout  # unchanged line
    assert "+    sampler = Sampler(mode=session)" in r.stdout
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before


def test_fix_refuses_a_dirty_git_tree_and_fixes_a_clean_one(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    tree = tmp_path / "tree"
    shutil.copytree(TREE / "scripts", tree)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "legacy"]):
        subprocess.run([git, *cmd], cwd=tree, check=True, env=env, capture_output=True)
    script = tree / "submit_v1.py"
    original = script.read_text()
    script.write_text(original + "# local edit\n")
    r = scan(".", "--fix", cwd=tree)
    assert r.returncode == 2 and "uncommitted changes" in r.stderr
    assert script.read_text() == original + "# local edit\n"
    script.write_text(original)
    r = scan(".", "--fix", "--format", "json", cwd=tree)
    assert "fixed 1 file(s)" in r.stderr
    fixed = script.read_text()
    compile(fixed, str(script), "exec")
    left = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert left == set(), left  # every finding in this script has a fix
