"""The route table: one row per Classic endpoint, read side by side with IBM's migration guide.

A row is `row(METHOD, classic template, action)`; the action is `forward(...)` (rewrite and send
to the new API), `gone(...)` (410: removed by IBM) or `local(...)` (answered by the proxy: the
Classic auth surface has no equivalent upstream). Adding an endpoint is one line.

Guide: https://quantum.cloud.ibm.com/docs/migration-guides/migrate-classic-rest-api
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import BadRequest, MethodNotAllowed, NotFound
from .rewrite import (
    PROVIDER,
    default,
    default_query,
    drop,
    drop_query,
    duration,
    lower_bools,
    rename,
)

# Path parameters are validated before they go anywhere near an upstream URL.
PARAM_PATTERNS: dict[str, re.Pattern[str]] = {
    "job_id": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$"),
    "session_id": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$"),
    "backend": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"),
    "hub": re.compile(r"^[A-Za-z0-9_.\-]{1,64}$"),
    "group": re.compile(r"^[A-Za-z0-9_.\-]{1,64}$"),
    "project": re.compile(r"^[A-Za-z0-9_.\-]{1,64}$"),
}

#: Legacy base paths a caller may use: the Classic API lived under /api (auth) and /runtime.
PREFIXES = ("/api", "/runtime")


@dataclass(frozen=True)
class Forward:
    """Send to the new API at `path` after the rewrites; `answer` names a fix-up in answers.py."""

    path: str
    query: tuple[Any, ...] = ()
    body: tuple[Any, ...] | None = None  # None: no JSON body expected; () : JSON passed as is
    answer: str | None = None
    creates: bool = False  # job/session creation: never retried, unknown outcome -> 409
    fanout: bool = False  # a list that Classic answered across all instances
    timeout: Literal["default", "submit"] = "default"
    kind: Literal["forward"] = "forward"


@dataclass(frozen=True)
class Gone:
    """410 Gone. `sdk` names a local answer given instead to legacy SDK callers that need one."""

    replacement: str | None = None
    sdk: str | None = None
    kind: Literal["gone"] = "gone"


@dataclass(frozen=True)
class Local:
    """Answered by the proxy; `handler` names a function in auth.py / answers.py."""

    handler: str
    replacement: str | None = None
    kind: Literal["local"] = "local"


Action = Forward | Gone | Local


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    action: Action
    section: str
    note: str = ""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = tuple(re.findall(r"{(\w+)}", self.template))
        for p in params:
            if p not in PARAM_PATTERNS:
                raise ValueError(f"{self.template}: unknown path parameter {p}")
        pattern = "^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", re.escape(self.template).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        object.__setattr__(self, "regex", re.compile(pattern))
        object.__setattr__(self, "params", params)

    @property
    def key(self) -> str:
        """The stable name used in metrics, logs and per-route policy: "GET /jobs/{job_id}"."""
        return f"{self.method} {self.template}"

    @property
    def replacement(self) -> str:
        a = self.action
        if isinstance(a, Forward):
            return a.path
        return a.replacement or "none"

    def upstream_path(self, params: dict[str, str]) -> str:
        assert isinstance(self.action, Forward)
        return self.action.path.format(**params)


_SECTION = "account"

#: The guide's section headings, by `section(...)` name (`routes` groups its rows under them); the two
#: sections the guide does not have say what they are.
SECTION_TITLES: dict[str, str] = {
    "classic-auth": "The Classic sign-in (not in the guide: answered by the proxy)",
    "account": "Changes to account- and instance-related endpoints",
    "jobs": "Changes to job-related endpoints",
    "sessions": "Changes to session- and workload-related endpoints",
    "backends": "Changes to system-related endpoints",
    "ibmq-provider": "qiskit-ibmq-provider 0.19/0.20 (not in the guide: IBMQ.enable_account)",
    "analytics": "Changes to analytics- and usage-related endpoints",
}


def section(name: str) -> None:
    global _SECTION
    _SECTION = name


def row(method: str, template: str, action: Action, note: str = "") -> Route:
    return Route(method, template, action, _SECTION, note)


def forward(path: str, *, query: list[Any] | None = None, body: list[Any] | None = None, **kw: Any) -> Forward:
    return Forward(path, tuple(query or ()), None if body is None else tuple(body), **kw)


def gone(replacement: str | None = None, *, sdk: str | None = None) -> Gone:
    return Gone(replacement, sdk)


def local(handler: str, replacement: str | None = None) -> Local:
    return Local(handler, replacement)


# Rewrites shared by several rows.
JOB_SUBMIT = [drop("hub", "group", "project", "private")]
SESSION_CREATE = [drop("instance"), rename("max_session_ttl", "max_ttl"), duration("max_ttl"), default("mode", "dedicated")]
JOB_READ = [lower_bools("exclude_params", "pending")]
# Lists: without params unless asked (old SDKs would try to decode every job's circuits, and fail on
# QPY written by newer clients).
JOB_LIST = [*JOB_READ, default_query("exclude_params", "true")]
SUBMIT = {"creates": True, "timeout": "submit"}

# fmt: off
ROUTES: list[Route] = []
# -- The Classic auth surface: no equivalent upstream, synthesized ---------------------------------
section("classic-auth")
ROUTES += [
    row("GET",    "/version",                            local("version")),
    row("POST",   "/users/loginWithToken",               local("login")),
    row("GET",    "/Network",                            local("network")),
]
# -- Changes to account- and instance-related endpoints ---------------------------------------------
section("account")
ROUTES += [
    row("GET",    "/health",                             gone()),
    row("GET",    "/users/me",                           local("me", "/v1/accounts/{id}"),
        "synthesized: the SDKs read their base URLs from it"),
    row("POST",   "/auth/validate",                      gone()),
    row("POST",   "/logout",                             local("logout", "/v1/logout"),
        "ends the caller's proxy session; the proxy's own IAM token is not the caller's to revoke"),
    row("GET",    "/instances",                          forward("/v1/instances/usage"),
        "also: /instance, /instances/configuration, /instances/usage"),
    row("GET",    "/instance",                           forward("/v1/instance")),
    row("GET",    "/instances/configuration",            forward("/v1/instances/configuration")),
    row("PUT",    "/instances/configuration",            forward("/v1/instances/configuration", body=[])),
    row("GET",    "/instances/usage",                    forward("/v1/instances/usage")),
]
# -- Changes to job-related endpoints ---------------------------------------------------------------
section("jobs")
ROUTES += [
    row("GET",    "/facade/v1/jobs",                     forward("/v1/jobs", query=JOB_LIST, answer="job_list", fanout=True)),
    row("POST",   "/facade/v1/jobs",                     forward("/v1/jobs", body=JOB_SUBMIT, answer="job_created", **SUBMIT)),
    row("GET",    "/facade/v1/jobs/tags",                forward("/v1/tags", query=[default_query("type", "job")], answer="tag_list")),
    row("GET",    "/facade/v1/jobs/{job_id}/type",       gone(sdk="job_type")),
    row("GET",    "/jobs",                               forward("/v1/jobs", query=JOB_LIST, answer="job_list", fanout=True)),
    row("POST",   "/jobs",                               forward("/v1/jobs", body=JOB_SUBMIT, answer="job_created", **SUBMIT)),
    row("GET",    "/jobs/{job_id}",                      forward("/v1/jobs/{job_id}", query=JOB_READ, answer="job")),
    row("DELETE", "/jobs/{job_id}",                      forward("/v1/jobs/{job_id}")),
    row("GET",    "/jobs/{job_id}/results",              forward("/v1/jobs/{job_id}/results", answer="results")),
    row("GET",    "/jobs/{job_id}/metrics",              forward("/v1/jobs/{job_id}/metrics", answer="metrics")),
    row("GET",    "/jobs/{job_id}/interim_results",      forward("/v1/jobs/{job_id}/interim_results")),
    row("GET",    "/jobs/{job_id}/transpiled_circuits",  forward("/v1/jobs/{job_id}/transpiled_circuits")),
    row("GET",    "/jobs/{job_id}/logs",                 forward("/v1/jobs/{job_id}/logs")),
    row("POST",   "/jobs/{job_id}/cancel",               forward("/v1/jobs/{job_id}/cancel")),
    row("PUT",    "/jobs/{job_id}/tags",                 forward("/v1/jobs/{job_id}/tags", body=[])),
]
# -- Changes to session- and workload-related endpoints ---------------------------------------------
section("sessions")
ROUTES += [
    row("POST",   "/sessions",                           forward("/v1/sessions", body=SESSION_CREATE, answer="session_created", **SUBMIT)),
    row("GET",    "/sessions/{session_id}",              forward("/v1/sessions/{session_id}")),
    row("PATCH",  "/sessions/{session_id}",              forward("/v1/sessions/{session_id}", body=[])),
    row("GET",    "/sessions/{session_id}/extended",     gone()),
    row("DELETE", "/sessions/{session_id}/close",        forward("/v1/sessions/{session_id}/close")),
    row("GET",    "/workloads/me",                       forward("/v1/workloads", answer="workloads")),
]
# -- Changes to system-related endpoints ------------------------------------------------------------
section("backends")
ROUTES += [
    row("GET",    "/backends",                           forward("/v1/backends", answer="device_names")),
    row("GET",    "/backends/{backend}/status",          forward("/v1/backends/{backend}/status")),
    row("GET",    "/backends/{backend}/defaults",        forward("/v1/backends/{backend}/defaults", answer="defaults")),
    row("GET",    "/backends/{backend}/properties",      forward("/v1/backends/{backend}/properties")),
    row("GET",    "/backends/{backend}/configuration",   forward("/v1/backends/{backend}/configuration")),
    row("GET",    "/v1/backends/{backend}/configuration", forward("/v1/backends/{backend}/configuration")),
]
# -- qiskit-ibmq-provider 0.19/0.20 (IBMQ.enable_account): read-only, per hub/group/project -------
section("ibmq-provider")
HGP = "/Network/{hub}/Groups/{group}/Projects/{project}"
ROUTES += [
    row("GET",    HGP + "/devices/v/1",                  local("ibmq_devices", "/v1/backends/{backend}/configuration"),
        "synthesized: every backend's configuration, one upstream call each"),
    row("GET",    HGP + "/devices/{backend}/properties", forward("/v1/backends/{backend}/properties", query=[drop_query("version")])),
    row("GET",    HGP + "/devices/{backend}/defaults",   forward("/v1/backends/{backend}/defaults", answer="defaults")),
    row("GET",    HGP + "/devices/{backend}/queue/status", forward("/v1/backends/{backend}/status", answer="queue_status")),
    row("GET",    HGP + "/Jobs/status/v/1",              local("qobj_jobs"), "Qobj jobs: the new API has none, the list is empty"),
    row("GET",    HGP + "/Jobs/v/1",                     local("qobj_jobs")),
    row("POST",   HGP + "/Jobs",                         gone("POST /v1/jobs (SamplerV2 in qiskit-ibm-runtime)"),
        "backend.run with Qobj went with the retired service"),
]
# -- Changes to analytics- and usage-related endpoints ----------------------------------------------
section("analytics")
ROUTES += [
    row("GET",    "/usage",                              gone(sdk="usage")),
    row("GET",    "/analytics/usage",                    forward("/v1/analytics/usage")),
    row("GET",    "/analytics/filters",                  forward("/v1/analytics/filters")),
    row("GET",    "/analytics/usage-grouped",            forward("/v1/analytics/usage_grouped"),
        "the guide writes usage-grouped; the API spec serves usage_grouped"),
    row("GET",    "/analytics/usage_grouped",            forward("/v1/analytics/usage_grouped")),
    row("GET",    "/analytics/usage-grouped-by-date",    forward("/v1/analytics/usage_grouped_by_date"),
        "the guide writes usage-grouped-by-date; the API spec serves usage_grouped_by_date"),
    row("GET",    "/analytics/usage_grouped_by_date",    forward("/v1/analytics/usage_grouped_by_date")),
]
# fmt: on


@dataclass
class Match:
    route: Route
    params: dict[str, str]


_BAD_RAW = re.compile(rb"%(2e|2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize(path: str, raw_path: bytes | None = None) -> str:
    """Strip a legacy prefix and trailing slash; refuse anything that could smuggle a path."""
    if raw_path is not None and _BAD_RAW.search(raw_path):
        raise BadRequest("encoded '.', '/', '\\' or NUL in the path", code="invalid_path")
    if "\\" in path or "//" in path or _CONTROL.search(path):
        raise BadRequest("malformed path", code="invalid_path")
    segments = path.split("/")
    if "." in segments or ".." in segments:
        raise BadRequest("dot segments are not allowed in the path", code="invalid_path")
    for prefix in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix):] or "/"
            break
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


class RouteTable:
    """Compiled once at start-up; `match` is what the hot path calls."""

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.routes = list(routes if routes is not None else ROUTES)
        seen: set[str] = set()
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: list[Route] = []
        for r in self.routes:
            if r.key in seen:
                raise ValueError(f"duplicate route {r.key}")
            seen.add(r.key)
            if r.params:
                self._dynamic.append(r)
            else:
                self._static[(r.method, r.template)] = r
        self._static_paths = {t for _, t in self._static}

    def match(self, method: str, path: str) -> Match:
        """Route for a normalized path, or NotFound / MethodNotAllowed / BadRequest (bad id)."""
        r = self._static.get((method, path))
        if r is not None:
            return Match(r, {})
        allowed: list[str] = []
        if path in self._static_paths:
            allowed = [m for (m, t) in self._static if t == path]
        for r in self._dynamic:
            m = r.regex.match(path)
            if m is None:
                continue
            if r.method != method:
                allowed.append(r.method)
                continue
            params = m.groupdict()
            for name, value in params.items():
                if not PARAM_PATTERNS[name].match(value):
                    raise BadRequest(f"invalid {name} in path", code="invalid_path_parameter")
            return Match(r, params)
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not supported on this Classic endpoint",
                headers={"allow": ", ".join(sorted(set(allowed)))},
            )
        raise NotFound(f"no Classic endpoint {method} {path}", code="unknown_endpoint")

    def render_table(self) -> str:
        lines = [f"{'METHOD':<7} {'CLASSIC PATH':<38} {'ACTION':<8} NEW API / NOTE"]
        for r in self.routes:
            lines.append(f"{r.method:<7} {r.template:<38} {r.action.kind:<8} {describe(r)}")
        return "\n".join(lines)

    def render_markdown(self) -> str:
        lines = ["| Method | Classic path | Action | New API path | Rewrites / notes |", "|---|---|---|---|---|"]
        for r in self.routes:
            lines.append(
                f"| {r.method} | `{r.template}` | {r.action.kind} | {_md_target(r)} | {_md_notes(r)} |"
            )
        return "\n".join(lines)


def _ops(r: Route) -> list[str]:
    a = r.action
    out: list[str] = []
    if isinstance(a, Forward):
        out += [op.describe() for op in (PROVIDER, *a.query)]
        out += [op.describe() for op in (a.body or ())]
        if a.answer:
            out.append(f"answer: {a.answer}")
    if isinstance(a, Gone) and a.sdk:
        out.append(f"legacy SDKs: answered locally ({a.sdk})")
    if r.note:
        out.append(r.note)
    return out


def move_to(route: Route) -> str:
    """What a caller should use instead: "GET /v1/jobs/{job_id}", a path, or "removed"."""
    a = route.action
    if isinstance(a, Forward):
        return f"{route.method} {a.path}"
    return a.replacement or "removed"


def describe_parts(r: Route) -> tuple[str, list[str]]:
    """Where a route goes ("GET /v1/jobs", "410 (...)", "proxy answers (...)") and its rewrites and notes."""
    a = r.action
    if isinstance(a, Forward):
        head = f"{r.method} {a.path}"
    elif isinstance(a, Gone):
        head = f"410 (replacement: {a.replacement or 'none'})"
    else:
        head = f"proxy answers ({a.handler})" + (f"; IBM: {a.replacement}" if a.replacement else "")
    return head, _ops(r)


def describe(r: Route) -> str:
    head, ops = describe_parts(r)
    return head + (f"  [{'; '.join(ops)}]" if ops else "")


def _md_target(r: Route) -> str:
    a = r.action
    if isinstance(a, Forward):
        return f"`{a.path}`"
    if isinstance(a, Gone):
        return f"410 Gone (replacement: {a.replacement or 'none'})"
    return "answered by the proxy" + (f" (IBM: `{a.replacement}`)" if a.replacement else "")


def _md_notes(r: Route) -> str:
    return "; ".join(_ops(r)).replace("|", "\\|")
