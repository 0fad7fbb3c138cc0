"""`scan --fix` on the shipped examples: the result compiles, imports with a current
qiskit-ibm-runtime, and passes `scan` for every rule that was fixed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proxy.scan.analyzer import Edit, scan_paths
from proxy.scan.fix import apply_edits, plan_fixes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SETUP = ROOT / "tests" / "legacy" / "setup_venvs.sh"
CURRENT = "runtime-0.51.0"


def test_overlapping_edits_first_wins_and_insertions_compose() -> None:
    src = "abcdef"
    out, applied = apply_edits(src, [Edit(1, 3, "X"), Edit(2, 4, "Y"), Edit(0, 0, "["), Edit(6, 6, "]")], [])
    assert out == "[aXdef]" and applied == {0, 2, 3}


def test_imports_merge_into_an_existing_from_import() -> None:
    src = '"""doc."""\nfrom __future__ import annotations\nfrom qiskit_ibm_runtime import Session  # x\n'
    out, _ = apply_edits(src, [], ["from qiskit_ibm_runtime import SamplerV2", "import os", "import os"])
    assert out == (
        '"""doc."""\nfrom __future__ import annotations\nimport os\n'
        "from qiskit_ibm_runtime import Session, SamplerV2  # x\n"
    )


@pytest.fixture(scope="module")
def fixed_examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    tree = tmp_path_factory.mktemp("fix") / "examples"
    shutil.copytree(EXAMPLES, tree)
    before = scan_paths([tree], base=tree)
    files = {f.path: tree / f.path for f in before.findings}
    fixes = plan_fixes(before.findings, files)
    fixed_codes = {c for fx in fixes for c in fx.fixed}
    for fx in fixes:
        fx.path.write_text(fx.after)
    return tree, fixed_codes


def test_fixed_examples_compile(fixed_examples: tuple[Path, set[str]]) -> None:
    tree, fixed = fixed_examples
    assert {"QCP101", "QCP102", "QCP104", "QCP201", "QCP203", "QCP303", "QCP304"} <= fixed
    for py in tree.rglob("*.py"):
        compile(py.read_text(), str(py), "exec")


def test_fixed_examples_pass_scan_for_the_fixed_rules(fixed_examples: tuple[Path, set[str]]) -> None:
    tree, fixed = fixed_examples
    left = [f for f in scan_paths([tree], base=tree).findings if f.code in fixed]
    assert left == [], [f.location() + " " + f.code for f in left]


@pytest.mark.skipif(os.environ.get("QCP_SKIP_LEGACY_SDKS") == "1", reason="QCP_SKIP_LEGACY_SDKS=1")
def test_fixed_examples_import_with_a_current_qiskit_ibm_runtime(fixed_examples: tuple[Path, set[str]]) -> None:
    tree, _ = fixed_examples
    env = {**os.environ, "QCP_LEGACY_ONLY": CURRENT}
    built = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=1800, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    venv = Path(subprocess.run(["bash", str(SETUP), "--print-dir"], capture_output=True, text=True).stdout.strip())
    python = venv / CURRENT / "bin" / "python"
    for py in sorted(tree.rglob("*.py")):
        # Import the module (its main() is behind __name__ == "__main__", so nothing is sent).
        code = (
            "import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); print(mod.main.__name__)"
        )
        r = subprocess.run([str(python), "-W", "ignore", "-c", code, str(py)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "main", f"{py.relative_to(tree)}:\n{r.stderr[-2000:]}"
