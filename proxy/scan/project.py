"""Which files to scan, and which SDK versions the project around each file pins.

The pins make rules version-aware: `from qiskit_ibm_runtime import Sampler` is the V1 primitive
only in code pinned to qiskit-ibm-runtime <= 0.27, and traffic from qiskit-ibm-runtime 0.40 cannot
come from a file pinned to 0.20. Pins come from the nearest requirements*.txt, pyproject.toml,
setup.cfg or Pipfile between the file and the scanned root.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: File kinds the scanner reads, by suffix.
PYTHON = {".py", ".pyw"}
NOTEBOOK = {".ipynb"}
SHELL = {".sh", ".bash", ".zsh"}
SUFFIXES = PYTHON | NOTEBOOK | SHELL
SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "__pycache__",
             "site-packages", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist",
             ".ipynb_checkpoints"}
#: SDKs whose pins matter to the rules (canonical distribution names).
TRACKED = ("qiskit-ibm-runtime", "qiskit-ibm-provider", "qiskit")


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files under `paths` with a scanned suffix; a file named directly is always scanned."""
    seen: set[Path] = set()
    for root in paths:
        if root.is_file():
            if root not in seen:
                seen.add(root)
                yield root
            continue
        for p in sorted(_walk(root)):
            if p not in seen:
                seen.add(p)
                yield p


def _walk(root: Path) -> Iterator[Path]:
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for e in entries:
        if e.is_dir() and not e.is_symlink():
            if e.name not in SKIP_DIRS and not e.name.endswith(".egg-info"):
                yield from _walk(e)
        elif e.suffix in SUFFIXES and e.is_file():
            yield e


_REQ_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*[^#;]*)")


def _parse_requirements(lines: list[str]) -> dict[str, SpecifierSet]:
    out: dict[str, SpecifierSet] = {}
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if name in TRACKED:
            out[name] = req.specifier
    return out


def _pins_of(manifest: Path) -> dict[str, SpecifierSet]:
    """The tracked pins one manifest declares ({} if it cannot be read)."""
    try:
        text = manifest.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    name = manifest.name
    if name.endswith(".txt"):
        return _parse_requirements(text.splitlines())
    if name == "pyproject.toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return {}
        deps = list(data.get("project", {}).get("dependencies", []))
        for extra in data.get("project", {}).get("optional-dependencies", {}).values():
            deps += list(extra)
        pins = _parse_requirements(deps)
        poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
        for dist, spec in poetry.items():
            if canonicalize_name(dist) in TRACKED and isinstance(spec, str):
                pins.setdefault(canonicalize_name(dist), _poetry_spec(spec))
        return pins
    if name == "setup.cfg":
        cfg = configparser.ConfigParser()
        try:
            cfg.read_string(text)
        except configparser.Error:
            return {}
        raw = cfg.get("options", "install_requires", fallback="")
        return _parse_requirements(raw.splitlines())
    if name == "Pipfile":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return {}
        pins = {}
        for dist, spec in data.get("packages", {}).items():
            if canonicalize_name(dist) in TRACKED and isinstance(spec, str) and spec != "*":
                pins[canonicalize_name(dist)] = SpecifierSet(spec)
        return pins
    return {}


def _poetry_spec(spec: str) -> SpecifierSet:
    spec = spec.strip()
    try:
        if spec.startswith("^"):
            v = Version(spec[1:])
            upper = f"{v.major + 1}" if v.major else f"0.{v.minor + 1}"
            return SpecifierSet(f">={v},<{upper}")
        if spec.startswith("~"):
            v = Version(spec.lstrip("~="))
            return SpecifierSet(f"~={v.major}.{v.minor}.{v.micro}")
        if spec and spec[0].isdigit():
            return SpecifierSet(f"=={spec}")
        return SpecifierSet(spec)
    except Exception:
        return SpecifierSet()


def _manifests(directory: Path) -> list[Path]:
    found = sorted(directory.glob("requirements*.txt"))
    found += [directory / n for n in ("pyproject.toml", "setup.cfg", "Pipfile") if (directory / n).is_file()]
    return found


@lru_cache(maxsize=4096)
def _dir_pins(directory: Path) -> tuple[tuple[str, str], ...]:
    pins: dict[str, SpecifierSet] = {}
    for m in _manifests(directory):
        for dist, spec in _pins_of(m).items():
            pins.setdefault(dist, spec)
    return tuple((d, str(s)) for d, s in sorted(pins.items()))


def pins_for(path: Path, root: Path) -> dict[str, SpecifierSet]:
    """Pins of the nearest manifest(s) from the file's folder up to `root` (the nearest wins per SDK)."""
    out: dict[str, SpecifierSet] = {}
    directory = path.parent.resolve()
    root = root.resolve()
    while True:
        for dist, spec in _dir_pins(directory):
            out.setdefault(dist, SpecifierSet(spec))
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return out


def admits_only_at_most(spec: SpecifierSet, ceiling: tuple[int, ...]) -> bool:
    """True when the pin admits some release <= ceiling and none after it (e.g. "==0.20.0", "<0.28")."""
    if not str(spec):
        return False
    major, minor = ceiling[0], ceiling[1]
    below = [Version(f"{major}.{m}.{p}") for m in range(0, minor + 1) for p in (0, 1, 2)]
    above = [Version(f"{major}.{m}.0") for m in range(minor + 1, minor + 40)] + [Version("1.0.0"), Version("99.0")]
    return any(spec.contains(v, prereleases=True) for v in below) and not any(
        spec.contains(v, prereleases=True) for v in above
    )


def admits(spec: SpecifierSet, version: tuple[int, ...]) -> bool:
    """Could a client of this (major, minor) version run under this pin? Unknown versions: yes."""
    if not version or not str(spec):
        return True
    major, minor = version[0], version[1] if len(version) > 1 else 0
    return any(spec.contains(Version(f"{major}.{minor}.{p}"), prereleases=True) for p in range(0, 10))
