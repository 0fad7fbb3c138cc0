"""Suggested changes: apply the findings' edits to a copy of each file, as a diff or in place.

Edits never overlap by construction except when two rules touch one expression; the first (by
position) wins and the other finding stays reported, so a second `scan --fix` can finish it.
`--fix` writes only when every file to change is clean in git, so the change is reviewable.
"""

from __future__ import annotations

import ast
import difflib
import json
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .analyzer import Edit, Finding, blank_magics


class FixError(RuntimeError):
    """--fix refused (dirty tree) or a file changed under us."""


@dataclass(frozen=True)
class FileFix:
    path: Path
    shown: str
    before: str
    after: str
    fixed: tuple[str, ...]  # codes of the findings whose edits were applied

    def diff(self) -> str:
        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            fromfile=f"a/{self.shown}", tofile=f"b/{self.shown}",
        ))


def apply_edits(source: str, edits: list[Edit], imports: list[str]) -> tuple[str, set[int]]:
    """The source with non-overlapping edits applied (and imports added); indexes of applied edits."""
    applied: set[int] = set()
    taken: list[tuple[int, int]] = []
    order = sorted(range(len(edits)), key=lambda i: (edits[i].start, edits[i].end))
    for i in order:
        e = edits[i]
        if any((e.start < end and start < e.end) or (e.start == e.end == start) for start, end in taken):
            continue
        taken.append((e.start, e.end))
        applied.add(i)
    out = source
    # Back to front; at one position the wider edit first, so an insertion lands before its text.
    for i in sorted(applied, key=lambda i: (edits[i].start, edits[i].end), reverse=True):
        e = edits[i]
        out = out[: e.start] + e.text + out[e.end:]
    return _add_imports(out, imports), applied


def _add_imports(source: str, imports: list[str]) -> str:
    """Add each missing import: into a one-line `from X import ...` of the same module if there is
    one, else after the module docstring and `__future__` imports."""
    missing = [imp for imp in dict.fromkeys(imports) if not _has_import(source, imp)]
    if not missing:
        return source
    try:
        tree = ast.parse(blank_magics(source))  # notebook cells: magics parse as comments
    except SyntaxError:
        return source
    lines = source.splitlines(keepends=True)
    new_lines: list[str] = []
    for imp in missing:
        want = ast.parse(imp).body[0]
        target = None
        if isinstance(want, ast.ImportFrom):
            target = next((n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == want.module
                           and n.lineno == n.end_lineno and "(" not in lines[n.lineno - 1]), None)
        if target is None:
            new_lines.append(imp + "\n")
            continue
        i = target.lineno - 1
        body, nl = (lines[i][:-1], "\n") if lines[i].endswith("\n") else (lines[i], "")
        code, hash_, comment = body.partition("#")
        names = ", ".join(a.name for a in want.names)  # type: ignore[attr-defined]
        lines[i] = code.rstrip() + f", {names}" + (f"  #{comment}" if hash_ else "") + nl
    at, i, body_nodes = 0, 0, tree.body
    if body_nodes and isinstance(body_nodes[0], ast.Expr) and isinstance(body_nodes[0].value, ast.Constant):
        at, i = body_nodes[0].end_lineno or 0, 1
    while i < len(body_nodes) and isinstance(body_nodes[i], ast.ImportFrom) and body_nodes[i].module == "__future__":
        at = body_nodes[i].end_lineno or at
        i += 1
    return "".join(lines[:at]) + "".join(new_lines) + "".join(lines[at:])


def _has_import(source: str, imp: str) -> bool:
    try:
        tree = ast.parse(blank_magics(source))
    except SyntaxError:
        return imp in source
    want = ast.parse(imp).body[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and isinstance(want, ast.Import):
            if {a.name for a in want.names} <= {a.asname or a.name for a in node.names}:
                return True
        if isinstance(node, ast.ImportFrom) and isinstance(want, ast.ImportFrom) and node.module == want.module:
            if {a.name for a in want.names} <= {a.asname or a.name for a in node.names}:
                return True
    return False


def plan_fixes(findings: list[Finding], files: dict[str, Path]) -> list[FileFix]:
    """One FileFix per file with fixable findings (notebooks are fixed cell by cell)."""
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.edits:
            by_file[f.path].append(f)
    out: list[FileFix] = []
    for shown, items in sorted(by_file.items()):
        path = files[shown]
        before = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            after, fixed = _fix_notebook(before, items)
        else:
            after, fixed = _fix_source(before, items)
        if after != before:
            out.append(FileFix(path, shown, before, after, tuple(sorted(fixed))))
    return out


def _fix_source(source: str, items: list[Finding], with_imports: bool = True) -> tuple[str, set[str]]:
    edits: list[Edit] = []
    owner: list[str] = []
    imports: list[str] = []
    for f in items:
        edits += f.edits
        owner += [f.code] * len(f.edits)
        imports += f.imports
    after, applied = apply_edits(source, edits, imports if with_imports else [])
    return after, {owner[i] for i in applied}


def _fix_notebook(text: str, items: list[Finding]) -> tuple[str, set[str]]:
    nb = json.loads(text)
    fixed: set[str] = set()
    by_cell: dict[int, list[Finding]] = defaultdict(list)
    for f in items:
        if f.cell is not None:
            by_cell[f.cell].append(f)
    def edit_cell(idx: int, change: Callable[[str], str]) -> None:
        cell = nb["cells"][idx - 1]
        src = cell.get("source", "")
        after = change("".join(src) if isinstance(src, list) else src)
        cell["source"] = after.splitlines(keepends=True) if isinstance(src, list) else after

    for idx, cell_items in by_cell.items():
        def fix(text: str, cell_items: list[Finding] = cell_items) -> str:
            after, codes = _fix_source(text, cell_items, with_imports=False)
            fixed.update(codes)
            return after
        edit_cell(idx, fix)
    imports = [imp for f in items for imp in f.imports]
    first = next((i for i, c in enumerate(nb["cells"], start=1) if c.get("cell_type") == "code"), None)
    if imports and first is not None:  # a notebook's imports go in its first code cell
        edit_cell(first, lambda text: _add_imports(text, imports))
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n", fixed


def require_clean_git(paths: list[Path]) -> None:
    """Refuse --fix when a file to change has uncommitted changes (or is untracked) in git."""
    for p in paths:
        try:
            out = subprocess.run(
                ["git", "status", "--porcelain", "--", p.name], cwd=p.parent, capture_output=True, text=True,
                timeout=30, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FixError(f"cannot ask git about {p}: {exc}") from None
        if out.returncode != 0:
            continue  # not in a git work tree: nothing to compare with
        if out.stdout.strip():
            raise FixError(f"{p} has uncommitted changes: commit or stash them first, so the fix is reviewable")


def write_fixes(fixes: list[FileFix]) -> None:
    require_clean_git([f.path for f in fixes])
    for f in fixes:
        if f.path.read_text(encoding="utf-8") != f.before:
            raise FixError(f"{f.shown} changed while scanning; run scan again")
    for f in fixes:
        f.path.write_text(f.after, encoding="utf-8")
