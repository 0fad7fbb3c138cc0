"""Which files are scanned, and the SDK pins read from the manifests around them."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from proxy.scan.project import admits, admits_only_at_most, iter_files, pins_for


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "spec"),
    [
        ("requirements.txt", "numpy\nqiskit-ibm-runtime==0.20.0  # the V1 era\n", "==0.20.0"),
        ("requirements-dev.txt", "qiskit_ibm_runtime<0.28,>=0.20\n", "<0.28,>=0.20"),
        ("pyproject.toml", '[project]\nname="x"\ndependencies=["qiskit-ibm-runtime~=0.23.0"]\n', "~=0.23.0"),
        ("pyproject.toml", '[tool.poetry.dependencies]\nqiskit-ibm-runtime = "^0.21"\n', "<0.22,>=0.21"),
        ("setup.cfg", "[options]\ninstall_requires =\n    qiskit-ibm-runtime==0.25.0\n", "==0.25.0"),
        ("Pipfile", '[packages]\nqiskit-ibm-runtime = "==0.22.0"\n', "==0.22.0"),
    ],
)
def test_pins_from_each_manifest_kind(tmp_path: Path, name: str, text: str, spec: str) -> None:
    write(tmp_path / name, text)
    code = write(tmp_path / "pkg" / "run.py", "")
    assert pins_for(code, tmp_path)["qiskit-ibm-runtime"] == SpecifierSet(spec)


def test_nearest_manifest_wins_and_stops_at_the_root(tmp_path: Path) -> None:
    write(tmp_path / "requirements.txt", "qiskit-ibm-runtime==0.40.1\n")
    write(tmp_path / "old" / "requirements.txt", "qiskit-ibm-runtime==0.20.0\n")
    old = write(tmp_path / "old" / "a.py", "")
    new = write(tmp_path / "b.py", "")
    assert str(pins_for(old, tmp_path)["qiskit-ibm-runtime"]) == "==0.20.0"
    assert str(pins_for(new, tmp_path)["qiskit-ibm-runtime"]) == "==0.40.1"
    assert pins_for(old, tmp_path / "old") == {"qiskit-ibm-runtime": SpecifierSet("==0.20.0")}
    assert pins_for(write(tmp_path / "sub" / "c.py", ""), tmp_path / "sub") == {}


def test_broken_manifests_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[project\n")
    write(tmp_path / "requirements.txt", "-r other.txt\nqiskit-ibm-runtime=>broken\n")
    assert pins_for(write(tmp_path / "a.py", ""), tmp_path) == {}


@pytest.mark.parametrize(
    ("spec", "v1"),
    [("==0.20.0", True), ("<0.28", True), (">=0.20,<0.27.2", True), ("~=0.23.0", True),
     (">=0.20", False), ("==0.28.0", False), ("", False), (">=0.30", False)],
)
def test_pinned_to_the_v1_era(spec: str, v1: bool) -> None:
    assert admits_only_at_most(SpecifierSet(spec), (0, 27)) is v1


def test_admits_a_client_version() -> None:
    assert admits(SpecifierSet("==0.20.0"), (0, 20))
    assert not admits(SpecifierSet("==0.20.0"), (0, 40))
    assert admits(SpecifierSet(">=0.30"), (0, 40))
    assert admits(SpecifierSet("==0.20.0"), ())  # unknown client version: could be


def test_iter_files_skips_virtualenvs_and_caches(tmp_path: Path) -> None:
    for rel in ("a.py", "n.ipynb", "s.sh", "readme.md", ".venv/lib/x.py", "node_modules/y.py",
                "pkg/__pycache__/z.py", "pkg/m.py", "build/gen.py", "x.egg-info/w.py"):
        write(tmp_path / rel, "")
    got = sorted(p.relative_to(tmp_path).as_posix() for p in iter_files([tmp_path]))
    assert got == ["a.py", "n.ipynb", "pkg/m.py", "s.sh"]
    assert list(iter_files([tmp_path / "readme.md"])) == [tmp_path / "readme.md"]  # named directly
