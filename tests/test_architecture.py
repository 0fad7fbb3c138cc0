"""The layout ARCHITECTURE.md documents is the layout the code has: layers, no cycles, small modules.

The layer table is read from the ```layers block of ARCHITECTURE.md (the one place it is written);
imports are found with `ast`, so a lazy import inside a function counts like a top-level one.
Imports under `if TYPE_CHECKING:` are type hints only and exempt.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxy"
DOC = ROOT / "ARCHITECTURE.md"
#: What the emulator may use of the proxy (it is a stand-in for IBM, not a part of the proxy).
EMULATOR_MAY_IMPORT = {"proxy.serving"}
LONG_MODULE_LINES = 400
LONG_MODULE_REASON = "Why one long module:"


def layers() -> list[tuple[int, str, tuple[str, ...]]]:
    """(level, group, module prefixes) rows of the ```layers block."""
    m = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert m, "ARCHITECTURE.md has no ```layers block"
    rows = []
    for line in m.group(1).splitlines():
        if line.strip():
            level, group, *prefixes = line.split()
            rows.append((int(level), group, tuple(prefixes)))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def runtime_imports(name: str, path: Path) -> set[str]:
    """Modules of `proxy` that `name` imports at run time (absolute names)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = modules()
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "proxy")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "proxy":
                for a in node.names:  # `from . import answers` imports a module
                    sub = f"{target}.{a.name}"
                    found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def group_of(name: str) -> tuple[int, str]:
    best: tuple[int, int, str] | None = None
    for level, group, prefixes in layers():
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                if best is None or len(p) > best[0]:
                    best = (len(p), level, group)
    assert best is not None, f"{name} is in no layer of ARCHITECTURE.md: add it to the ```layers block"
    return best[1], best[2]


def test_every_module_has_a_place_in_the_documented_layers() -> None:
    for name in modules():
        group_of(name)


def test_no_module_imports_upward_or_sideways() -> None:
    wrong = []
    for name, path in modules().items():
        level, group = group_of(name)
        for target in runtime_imports(name, path):
            t_level, t_group = group_of(target)
            if t_group == group:
                continue
            if t_level >= level:
                wrong.append(f"{name} ({group}, layer {level}) imports {target} ({t_group}, layer {t_level})")
    assert wrong == []


def test_the_emulator_uses_only_the_server_helper_of_the_proxy() -> None:
    for name, path in modules().items():
        if name.startswith("proxy.emulator"):
            outside = {t for t in runtime_imports(name, path) if not t.startswith("proxy.emulator")}
            assert outside <= EMULATOR_MAY_IMPORT, f"{name} imports {outside - EMULATOR_MAY_IMPORT}"


def test_no_import_cycles() -> None:
    graph = {name: runtime_imports(name, path) for name, path in modules().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(m) :], m]))
            elif m not in state:
                walk(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            walk(n)


def test_long_modules_say_why_at_their_top() -> None:
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > LONG_MODULE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert LONG_MODULE_REASON in doc, f"{name}: over {LONG_MODULE_LINES} lines, no '{LONG_MODULE_REASON}'"


def test_the_documented_folders_exist() -> None:
    text = DOC.read_text()
    for ref in set(re.findall(r"`(proxy/[\w/]+(?:\.py)?)`", text)):
        assert (ROOT / ref).exists(), f"ARCHITECTURE.md names {ref}, which does not exist"
    for name in modules():
        if name.count(".") == 1 and (PACKAGE / name.split(".")[1]).is_dir():
            assert f"proxy/{name.split('.')[1]}/" in text, f"ARCHITECTURE.md does not describe {name}"
