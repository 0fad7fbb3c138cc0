"""Find the legacy patterns of `rules.py` in Python files, notebooks and shell scripts.

Why one long module: the rules share one pass over each file's `ast` and one table of what the
file's names mean (imports, which variables hold a provider, a backend, a job, a result), so a
rule is a few lines in the visitor rather than a module of its own. Shell scripts and string
literals share `classic_paths`, which matches text against the proxy's own route table, so a
finding names the route the code calls.

Each finding may carry edits (`Edit`) for `--diff` / `--fix`; `fix.py` applies them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.specifiers import SpecifierSet

from ..classic.routes import PREFIXES, RouteTable, move_to
from .project import NOTEBOOK, PYTHON, SHELL, admits_only_at_most, iter_files, pins_for
from .rules import BY_CODE, LAST_V1_RUNTIME, RUNTIME


@dataclass(frozen=True)
class Edit:
    """Replace source[start:end] (character offsets in the file, or in the notebook cell)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Finding:
    path: str
    line: int  # 1-based; in a notebook, the line within the cell
    col: int  # 1-based
    code: str
    message: str
    routes: tuple[str, ...]
    end_line: int = 0
    end_col: int = 0
    cell: int | None = None  # notebook code-cell index (1-based, counting every cell)
    edits: tuple[Edit, ...] = ()
    imports: tuple[str, ...] = ()  # import lines the edits need

    @property
    def rule(self):  # -> Rule (no annotation: keeps the dataclass free of forward refs)
        return BY_CODE[self.code]

    @property
    def fixable(self) -> bool:
        return bool(self.edits)

    def location(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}"
        return f"{where} (cell {self.cell})" if self.cell is not None else where


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was not scanned)
    #: Per scanned file with pins: {"qiskit-ibm-runtime": "==0.20.0", ...}
    pins: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Per scanned Python file or notebook: the IBM SDKs it imports ("qiskit_ibm_runtime", ...).
    sdks: dict[str, tuple[str, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- text patterns

_CLASSIC_HOST = re.compile(
    r"\b(?:api|auth)\.quantum-computing\.ibm\.com\b|\b[a-z0-9-]+\.quantum-computing\.cloud\.ibm\.com\b"
)
_URL_OR_PATH = re.compile(r"(?:https?://(?P<host>[A-Za-z0-9.\-]+)(?::\d+)?)?(?P<path>(?:/[A-Za-z0-9_{}\-.~%:@]+)+/?)")
#: Paths that only the Classic surface has (unprefixed paths like "/jobs" are too common to flag).
_CLASSIC_ONLY = ("/facade/", "/users/", "/Network", "/logout", "/auth/validate", "/analytics/", "/workloads/")
_NEW_API_HOSTS = {"quantum.cloud.ibm.com", "iam.cloud.ibm.com"}
_SDK_IMPORT = re.compile(r'(?:^|")[ \t]*(?:from|import)[ \t]+(qiskit_ibm_runtime|qiskit_ibm_provider)\b', re.M)
#: Every rule needs one of these somewhere in the file's text; a file without any is not parsed.
_TRIGGERS = re.compile(
    r"qiskit|IBMQ|quantum-computing|program_id|max_session_ttl|quasi_dists|/api|/runtime|/facade/|/users/"
    r"|/Network|/logout|/auth/validate|/analytics/|/workloads/|/extended"
)
_SUPPRESS = re.compile(r"#\s*qcp:\s*ignore(?:\[(?P<codes>[A-Z0-9,\s]+)\])?", re.IGNORECASE)
_STRING = re.compile(r"(?s)([rRuU]*)('''|\"\"\"|'|\")(.*)\2")
_HGP = re.compile(r"^[\w.\-]+/[\w.\-]+/[\w.\-]+$")
_CURL_METHOD = re.compile(r"(?:-X|--request)\s*['\"]?([A-Za-z]+)")
_HTTP_VERBS = {"get": "GET", "post": "POST", "put": "PUT", "patch": "PATCH", "delete": "DELETE"}
RETIRED_PROGRAMS = {"circuit-runner", "qasm3-runner", "hello-world", "vqe", "qaoa", "sample-program",
                    "sample-expval", "quantum-kernel-alignment", "torch-train", "torch-infer"}

_TABLE = RouteTable()


def classic_paths(text: str, method: str | None = None) -> list[tuple[bool, str, list[str]]]:
    """Classic endpoints named in `text`: (has a Classic host, the path, matching route keys)."""
    out: list[tuple[bool, str, list[str]]] = []
    for m in _URL_OR_PATH.finditer(text.replace("{}", "{x}")):
        host, path = m.group("host") or "", m.group("path")
        classic_host = bool(host and _CLASSIC_HOST.search(host))
        if host in _NEW_API_HOSTS:
            continue
        path = path.split("?", 1)[0]
        prefixed = False
        for prefix in PREFIXES:
            if path == prefix or path.startswith(prefix + "/"):
                path, prefixed = path[len(prefix):] or "/", True
                break
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        classic_only = path.startswith(_CLASSIC_ONLY) or path.endswith("/extended")
        if host and not classic_host and not (classic_only or m.group("path").startswith("/runtime/")):
            continue  # another service's /api/...: only Classic-only paths (or /runtime/) through a proxy count
        if not (prefixed or classic_host or classic_only):
            continue
        keys = [r.key for r in _TABLE.routes if r.regex.match(path) and (method is None or r.method == method)]
        if keys or classic_host:
            out.append((classic_host, path, keys))
    return out


def _new_api(keys: list[str]) -> str:
    """"new API: GET /v1/jobs | POST /v1/jobs" for the matched Classic routes."""
    by_key = {r.key: r for r in _TABLE.routes}
    return "new API: " + " | ".join(dict.fromkeys(move_to(by_key[k]) for k in keys[:4]))


def suppressed(line_text: str, code: str) -> bool:
    m = _SUPPRESS.search(line_text)
    if not m:
        return False
    codes = m.group("codes")
    return codes is None or code in {c.strip().upper() for c in codes.split(",")}


# ---------------------------------------------------------------------------- Python


class _Offsets:
    """ast positions (line, UTF-8 byte column) -> character offsets into the source."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln))

    def at(self, line: int, col_bytes: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return self.starts[line - 1] + len(text.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined, arg-type]


def _chars(line: str, col_bytes: int) -> int:
    """ast columns count UTF-8 bytes; editors and SARIF count characters."""
    return len(line.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))


def _qual_names(tree: ast.AST) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    names[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


_IBM_MODULES = ("qiskit_ibm_provider", "qiskit_ibm_runtime", "qiskit.IBMQ", "qiskit.providers.ibmq")
_PROVIDER_CLASSES = {"qiskit_ibm_provider.IBMProvider", "qiskit_ibm_runtime.QiskitRuntimeService",
                     "qiskit.IBMQ.load_account", "qiskit.IBMQ.enable_account", "qiskit.IBMQ.get_provider"}
_V1_NAMES = {"Sampler": "SamplerV2", "Estimator": "EstimatorV2"}
_V1_ALIASES = {"SamplerV1": "SamplerV2", "EstimatorV1": "EstimatorV2"}


class _PythonScan(ast.NodeVisitor):
    def __init__(self, source: str, path: str, pins: dict[str, SpecifierSet], cell: int | None) -> None:
        self.source, self.path, self.cell = source, path, cell
        self.lines = source.splitlines()
        self.off = _Offsets(source)
        self.found: list[Finding] = []
        self.tree = ast.parse(source)
        self.names = _qual_names(self.tree)
        self.ibm = any(q.startswith(_IBM_MODULES) for q in self.names.values())
        runtime_pin = pins.get("qiskit-ibm-runtime")
        v1_shapes = any(
            (isinstance(n, ast.Attribute) and n.attr == "quasi_dists")
            or (isinstance(n, ast.keyword) and n.arg in ("parameter_values", "circuit_indices"))
            for n in ast.walk(self.tree)
        )
        self.v1 = bool(runtime_pin is not None and admits_only_at_most(runtime_pin, LAST_V1_RUNTIME)) or (
            runtime_pin is None and v1_shapes
        )
        self.creg = _creg_name(self.tree)
        self._track()
        self._handled: set[int] = set()
        self._methods: dict[int, str] = {}
        self._provider_import_flagged = False
        self._provider_called = any(
            isinstance(n, ast.Call) and self.qual(n.func) == "qiskit_ibm_provider.IBMProvider"
            for n in ast.walk(self.tree)
        )

    # -- what names hold
    def qual(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _track(self) -> None:
        self.providers: set[str] = set()
        self.provider_classes: set[str] = set()
        self.backends: set[str] = set()
        self.jobs: set[str] = set()
        self.results: set[str] = set()
        self.v1_prims: set[str] = set()
        for _ in range(2):  # two rounds: assignments may refer to names bound later in the file
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    self._bind(node.targets[0].id, node.value)
                elif isinstance(node, ast.With):
                    for item in node.items:
                        if isinstance(item.optional_vars, ast.Name):
                            self._bind(item.optional_vars.id, item.context_expr)

    def _bind(self, name: str, value: ast.AST) -> None:
        if not isinstance(value, ast.Call):
            if isinstance(value, ast.Subscript) and self._is_backend(value.value):
                self.backends.add(name)
            return
        q = self.qual(value.func)
        if q in _PROVIDER_CLASSES:
            self.providers.add(name)
            if q == "qiskit_ibm_provider.IBMProvider":
                self.provider_classes.add(name)
        elif self._is_backend(value):
            self.backends.add(name)
        elif self._is_job(value):
            self.jobs.add(name)
        elif isinstance(value.func, ast.Attribute) and value.func.attr == "result" and self._is_job(value.func.value):
            self.results.add(name)
        elif q and q.rsplit(".", 1)[-1] in _V1_NAMES and q.startswith("qiskit_ibm_runtime") and self.v1:
            self.v1_prims.add(name)

    def _is_backend(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.backends
        if isinstance(node, ast.Subscript):
            return isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) and (
                node.value.func.attr == "backends" and self._is_provider(node.value.func.value)
            )
        if not isinstance(node, ast.Call) or not self.ibm:
            return False
        q = self.qual(node.func) or ""
        if q.endswith(".least_busy") and q.startswith(_IBM_MODULES):
            return True
        f = node.func
        return isinstance(f, ast.Attribute) and f.attr in ("get_backend", "backend", "least_busy") and (
            self._is_provider(f.value)
        )

    def _is_provider(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.providers
        return isinstance(node, ast.Call) and self.qual(node.func) in _PROVIDER_CLASSES

    def _is_job(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.jobs
        if not isinstance(node, ast.Call):
            return False
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "run" and self._is_backend(f.value):
            return True
        if isinstance(f, ast.Attribute) and f.attr in ("retrieve_job", "job") and f.value is not None and (
            isinstance(f.value, ast.Name) and f.value.id in self.provider_classes
        ):
            return True
        return (self.qual(f) or "") in ("qiskit.execute", "qiskit.execute_function.execute")

    # -- output
    def add(self, node: ast.AST, code: str, detail: str = "", edits: Iterable[Edit] = (),
            imports: Iterable[str] = (), routes: Iterable[str] | None = None) -> None:
        line = getattr(node, "lineno", 1)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if suppressed(text, code):
            return
        rule = BY_CODE[code]
        col = _chars(text, getattr(node, "col_offset", 0)) + 1
        end_line = getattr(node, "end_lineno", line) or line
        end_text = self.lines[end_line - 1] if 0 < end_line <= len(self.lines) else ""
        end_col = _chars(end_text, getattr(node, "end_col_offset", 0) or 0) + 1
        self.found.append(Finding(
            self.path, line, col, code,
            rule.message + (f": {detail}" if detail else ""),
            tuple(routes) if routes is not None else rule.routes,
            end_line, end_col,
            self.cell, tuple(edits), tuple(imports),
        ))

    def replace(self, node: ast.AST, text: str) -> Edit:
        start, end = self.off.span(node)
        return Edit(start, end, text)

    def restring(self, node: ast.AST, value: str) -> Edit:
        """Replace a string literal's text, keeping its prefix and quote style."""
        start, end = self.off.span(node)
        m = _STRING.fullmatch(self.source[start:end])
        if not m:
            return Edit(start, end, repr(value))
        return Edit(start, end, f"{m.group(1)}{m.group(2)}{value}{m.group(2)}")

    def src(self, node: ast.AST) -> str:
        start, end = self.off.span(node)
        return self.source[start:end]

    # -- visitors
    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level == 0 and mod.startswith("qiskit_ibm_provider"):
            names = {a.name for a in node.names}
            edits = ()
            if mod == "qiskit_ibm_provider" and names <= {"IBMProvider"} and all(a.asname is None for a in node.names):
                if self.names.get("QiskitRuntimeService") == "qiskit_ibm_runtime.QiskitRuntimeService":
                    start, end = self.off.span(node)
                    end += self.source[end:end + 1] == "\n"
                    edits = (Edit(start, end, ""),)
                else:
                    edits = (self.replace(node, "from qiskit_ibm_runtime import QiskitRuntimeService"),)
            if not self._provider_called or edits:
                self.add(node, "QCP102", f"import from {mod}", edits)
                self._provider_import_flagged = True
        if node.level == 0 and mod.startswith("qiskit_ibm_runtime"):
            for a in node.names:
                if a.name in _V1_NAMES and self.v1:
                    new = f"{_V1_NAMES[a.name]} as {a.asname or a.name}"
                    self.add(a, "QCP201", f"{a.name} imported in code pinned to qiskit-ibm-runtime <= 0.27"
                             " (or using V1 result shapes)", [self.replace(a, new)])
                elif a.name in _V1_ALIASES:
                    new = f"{_V1_ALIASES[a.name]} as {a.asname or a.name}"
                    self.add(a, "QCP202", a.name, [self.replace(a, new)])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        q = self.qual(node.func) or ""
        f = node.func
        for kw in node.keywords:
            v = kw.value
            const = v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else None
            if kw.arg == "channel" and const == "ibm_quantum":
                self.add(v, "QCP101", edits=[self.restring(v, "ibm_quantum_platform")])
                self._handled.add(id(v))
            elif kw.arg == "instance" and const is not None and _HGP.match(const):
                self.add(v, "QCP104", f'instance="{const}"',
                         [self.replace(v, 'os.environ.get("QISKIT_IBM_INSTANCE")')], ["import os"])
                self._handled.add(id(v))
            elif kw.arg == "program_id" and const in RETIRED_PROGRAMS:
                self.add(v, "QCP205", f"program_id={const!r}")
                self._handled.add(id(v))
            elif kw.arg == "max_session_ttl":
                start = self.off.at(kw.lineno, kw.col_offset)
                self.add(kw, "QCP301", edits=[Edit(start, start + len("max_session_ttl"), "max_ttl")])
        hgp = [kw.arg for kw in node.keywords if kw.arg in ("hub", "group", "project")]
        if hgp and self.ibm:
            self.add(node, "QCP104", ", ".join(f"{k}=" for k in hgp))
        if q == "qiskit_ibm_provider.IBMProvider":
            edits = [self.replace(f, "QiskitRuntimeService")]
            if not any(kw.arg == "channel" for kw in node.keywords):
                end = self.off.span(f)[1]
                sep = ", " if node.args or node.keywords else ""
                edits.append(Edit(end + 1, end + 1, f'channel="ibm_quantum_platform"{sep}'))
            imports = [] if self._provider_import_flagged else ["from qiskit_ibm_runtime import QiskitRuntimeService"]
            self.add(node, "QCP102", "IBMProvider(...)", edits, imports)
        elif q.startswith(("qiskit.IBMQ.", "qiskit.providers.ibmq.IBMQ.")) and q.rsplit(".", 1)[-1] in (
            "enable_account", "load_account", "save_account"
        ):
            self.add(node, "QCP103", q.rsplit(".", 2)[-2] + "." + q.rsplit(".", 1)[-1])
        elif q in ("qiskit.execute", "qiskit.execute_function.execute"):
            self.add(node, "QCP204")
        elif self.v1 and q.startswith("qiskit_ibm_runtime") and q.rsplit(".", 1)[-1] in _V1_NAMES:
            kws = [kw for kw in node.keywords if kw.arg in ("session", "backend")]
            if kws:
                kw = kws[0]
                start = self.off.at(kw.lineno, kw.col_offset)
                self.add(node, "QCP201", f"{kw.arg}= becomes mode= in the V2 primitives",
                         [Edit(start, start + len(kw.arg), "mode")])
        elif q.startswith("qiskit_ibm_runtime") and q.endswith(".Session"):
            if any(kw.arg == "max_time" for kw in node.keywords):
                self.add(node, "QCP302")
        if isinstance(f, ast.Attribute):
            self._attribute_call(node, f)
            verb = _HTTP_VERBS.get(f.attr)
            if verb and node.args:
                self._methods[id(node.args[0])] = verb
        self.generic_visit(node)

    def _attribute_call(self, node: ast.Call, f: ast.Attribute) -> None:
        if f.attr == "run" and self._is_backend(f.value):
            # backend.run(c, shots=n) -> SamplerV2(mode=backend).run([c], shots=n): insertions only, so
            # edits inside the receiver or the arguments (other rules) still apply.
            r0, r1 = self.off.span(f.value)
            edits: list[Edit] = [Edit(r0, r0, "SamplerV2(mode="), Edit(r1, r1, ")")]
            if node.args and not isinstance(node.args[0], ast.List | ast.Tuple):
                a0, a1 = self.off.span(node.args[0])
                edits += [Edit(a0, a0, "["), Edit(a1, a1, "]")]
            imports = ["from qiskit_ibm_runtime import SamplerV2"]
            self.add(node, "QCP203", f"{self.src(f.value)}.run(...)", edits, imports)
        elif f.attr == "run" and isinstance(f.value, ast.Name) and f.value.id in self.v1_prims and node.args:
            first = node.args[0]
            if not isinstance(first, ast.List | ast.Tuple) and not any(
                kw.arg in ("parameter_values", "circuit_indices") for kw in node.keywords
            ):
                # V2 takes a list of pubs; a single circuit becomes a one-pub list (part of QCP201's fix).
                a0, a1 = self.off.span(first)
                wrap = [Edit(a0, a0, "["), Edit(a1, a1, "]")]
                self.add(node, "QCP201", "V1 run(circuit) becomes run([circuit])", wrap)
        elif f.attr == "get_counts" and self._is_result(f.value):
            receiver = f.value
            index = "0"
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int):
                index = str(node.args[0].value)
            edits = []
            if self.creg and (not node.args or isinstance(node.args[0], ast.Constant)):
                end = self.off.span(receiver)[1]
                edits = [Edit(end, self.off.span(node)[1], f"[{index}].data.{self.creg}.get_counts()")]
            self.add(node, "QCP304", edits=edits)
        elif f.attr == "usage" and not node.args and self._is_provider(f.value):
            self.add(node, "QCP305")
        elif f.attr == "get_backend" and isinstance(f.value, ast.Name) and f.value.id in self.provider_classes:
            # IBMProvider.get_backend is QiskitRuntimeService.backend (part of QCP102's fix).
            start = self.off.at(f.end_lineno, f.end_col_offset) - len("get_backend")  # type: ignore[arg-type]
            self.add(f, "QCP102", "provider.get_backend(...) is service.backend(...)",
                     [Edit(start, start + len("get_backend"), "backend")])

    def _is_result(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.results
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
            node.func.attr == "result" and self._is_job(node.func.value)
        )

    def visit_Subscript(self, node: ast.Subscript) -> None:
        v = node.value
        if isinstance(v, ast.Attribute) and v.attr == "quasi_dists":
            self._handled.add(id(v))
            edits = []
            if self.creg:
                end = self.off.span(v.value)[1]
                edits = [Edit(end, self.off.span(node)[1], f"[{self.src(node.slice)}].data.{self.creg}.get_counts()")]
            self.add(v, "QCP303", edits=edits)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self._handled:
            if node.attr == "quasi_dists":
                self.add(node, "QCP303")
            elif node.attr == "max_session_ttl":
                start = self.off.at(node.end_lineno, node.end_col_offset) - len("max_session_ttl")  # type: ignore[arg-type]
                self.add(node, "QCP301", edits=[Edit(start, start + len("max_session_ttl"), "max_ttl")])
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for k, v in zip(node.keys, node.values, strict=True):
            if isinstance(k, ast.Constant) and k.value == "program_id" and isinstance(v, ast.Constant) and (
                v.value in RETIRED_PROGRAMS
            ):
                self.add(v, "QCP205", f'"program_id": {v.value!r}')
                self._handled.add(id(v))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self._handled:
            self._text(node, node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        self._text(node, text)
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                self.visit(v)

    def _text(self, node: ast.AST, text: str) -> None:
        if text == "max_session_ttl":
            edits = [self.restring(node, "max_ttl")] if isinstance(node, ast.Constant) else []
            self.add(node, "QCP301", edits=edits)
            return
        if "/" not in text and "quantum-computing" not in text:
            return
        method = self._methods.get(id(node)) or None
        for classic_host, path, keys in classic_paths(text, method):
            if classic_host:
                self.add(node, "QCP105", f"{path} ({_new_api(keys)})" if keys else path,
                         routes=keys or None)
            else:
                self.add(node, "QCP306", f"{path} ({_new_api(keys)})", routes=keys)


def _creg_name(tree: ast.AST) -> str | None:
    """The classical register a SamplerV2 result names, when the file makes it unambiguous."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if fname == "measure_all":
                names.add("meas")
            elif fname == "ClassicalRegister":
                arg = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "name"), None)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                else:
                    return None
            elif fname == "QuantumCircuit" and len(node.args) >= 2 and all(
                isinstance(a, ast.Constant) and isinstance(a.value, int) for a in node.args[:2]
            ):
                names.add("c")
    return names.pop() if len(names) == 1 else None


def scan_python(source: str, path: str, pins: dict[str, SpecifierSet], cell: int | None = None) -> list[Finding]:
    """Findings in one Python source (raises SyntaxError)."""
    scan = _PythonScan(source, path, pins, cell)
    scan.visit(scan.tree)
    scan.found.sort(key=lambda f: (f.line, f.col, f.code))
    return scan.found


# ---------------------------------------------------------------------------- notebooks, shell


def notebook_cells(text: str) -> list[tuple[int, str]]:
    """(1-based cell index, source) of each code cell; IPython magics and shell lines blanked."""
    nb = json.loads(text)
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    out = []
    for i, c in enumerate(cells, start=1):
        if c.get("cell_type") != "code":
            continue
        src = c.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        out.append((i, src))
    return out


def blank_magics(src: str) -> str:
    """IPython magics and shell escapes become comments of the same length (offsets stay valid)."""
    if src.lstrip().startswith("%%"):
        return "\n".join("#" + ln[1:] if ln else ln for ln in src.split("\n"))
    out = []
    for ln in src.split("\n"):
        body = ln.lstrip()
        if body.startswith(("%", "!")):
            ln = ln[: len(ln) - len(body)] + "#" + body[1:]
        out.append(ln)
    return "\n".join(out)


def _scan_notebook(text: str, shown: str, pins: dict[str, SpecifierSet]) -> list[Finding]:
    """All code cells as one program (names flow between cells), findings mapped back to cells."""
    cells = notebook_cells(text)
    found: list[Finding] = []
    joined, starts, offsets = "", [], []  # per cell: first line (1-based) and first character offset
    for _idx, src in cells:
        starts.append(joined.count("\n") + 1)
        offsets.append(len(joined))
        joined += blank_magics(src) + "\n"
    try:
        whole = scan_python(joined, shown, pins)
    except SyntaxError:
        whole = None
    if whole is None:  # one cell is not Python: scan cell by cell
        for idx, src in cells:
            try:
                found += scan_python(blank_magics(src), shown, pins, idx)
            except SyntaxError:
                pass
    else:
        for f in whole:
            i = max(k for k, first in enumerate(starts) if first <= f.line)
            shift = starts[i] - 1
            edits = tuple(Edit(e.start - offsets[i], e.end - offsets[i], e.text) for e in f.edits)
            found.append(replace(f, line=f.line - shift, end_line=max(f.end_line - shift, 1), cell=cells[i][0],
                                 edits=edits))
    for idx, src in cells:
        found += [f for f in scan_shell(src, shown, idx) if _is_shell_line(src, f.line)]
    return found


def scan_shell(text: str, path: str, cell: int | None = None) -> list[Finding]:
    """Classic URLs and paths in shell lines (curl, wget, httpie)."""
    found: list[Finding] = []
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip().lstrip("!")
        if stripped.startswith("#") or ("/" not in line):
            continue
        m = _CURL_METHOD.search(line)
        method = m.group(1).upper() if m else ("POST" if re.search(r"\s(-d|--data\S*|--json)\s", line) else None)
        if method is None and re.search(r"\bcurl\b", line):
            method = "GET"
        for classic_host, p, keys in classic_paths(line, method):
            code = "QCP105" if classic_host else "QCP306"
            if suppressed(line, code):
                continue
            col = line.find(p) + 1 if p in line else 1
            if classic_host:
                detail = f"{p} ({_new_api(keys)})" if keys else p
            else:
                detail = f"{p} ({_new_api(keys)})"
            found.append(Finding(path, n, col, code, f"{BY_CODE[code].message}: {detail}",
                                 tuple(keys) if keys or not classic_host else BY_CODE[code].routes, n, col, cell))
        if '"program_id"' in line:
            for prog in RETIRED_PROGRAMS:
                if re.search(rf'"program_id"\s*:\s*"{re.escape(prog)}"', line) and not suppressed(line, "QCP205"):
                    found.append(Finding(path, n, line.find('"program_id"') + 1, "QCP205",
                                         f"{BY_CODE['QCP205'].message}: {prog!r}", BY_CODE["QCP205"].routes,
                                         n, 0, cell))
    return found


# ---------------------------------------------------------------------------- entry point


def scan_paths(paths: list[Path], enabled: set[str] | None = None, *, base: Path | None = None) -> ScanResult:
    """Scan files and folders; unreadable or unparsable files are listed in `errors`, never raised."""
    result = ScanResult()
    base = base or Path.cwd()
    for root in paths:
        for file in iter_files([root]):
            shown = _display(file, base)
            result.files += 1
            pins = pins_for(file, root if root.is_dir() else file.parent)
            if pins:
                result.pins[shown] = {d: str(s) for d, s in pins.items()}
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                result.errors.append((shown, f"cannot read: {exc.__class__.__name__}"))
                continue
            try:
                found = _scan_text(file, text, shown, pins)
            except SyntaxError as exc:
                result.errors.append((shown, f"syntax error at line {exc.lineno}: {exc.msg}"))
                continue
            except (ValueError, RecursionError) as exc:
                result.errors.append((shown, f"cannot parse: {exc.__class__.__name__}"))
                continue
            result.findings += [f for f in found if enabled is None or f.code in enabled]
            if file.suffix in PYTHON or file.suffix in NOTEBOOK:
                result.sdks[shown] = tuple(sorted(set(_SDK_IMPORT.findall(text))))
    return result


def _scan_text(file: Path, text: str, shown: str, pins: dict[str, SpecifierSet]) -> list[Finding]:
    if not _TRIGGERS.search(text):
        return []  # no rule can match: most files of a codebase end here, unparsed
    if file.suffix in NOTEBOOK:
        return _scan_notebook(text, shown, pins)
    if file.suffix in SHELL:
        return scan_shell(text, shown)
    if file.suffix in PYTHON:
        return scan_python(text, shown, pins)
    return []


def _is_shell_line(src: str, line: int) -> bool:
    lines = src.split("\n")
    if src.lstrip().startswith("%%bash") or src.lstrip().startswith("%%sh"):
        return True
    return 0 < line <= len(lines) and lines[line - 1].lstrip().startswith("!")


def _display(file: Path, base: Path) -> str:
    try:
        return file.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


__all__ = ["RUNTIME", "Edit", "Finding", "ScanResult", "classic_paths", "scan_paths", "scan_python", "scan_shell"]
