"""Prometheus metrics with bounded labels: who still calls which legacy route, how it went.

Labels never carry ids or raw paths. `route` is the legacy route *template* ("GET /jobs/{job_id}")
or "unmatched"; `caller` is a client-token name, else "anonymous" (the same name as in the access
log and the usage report), at most `MAX_CALLERS` distinct values ever (then "other"); `client` is
the software: the SDK and its major.minor version, else a known HTTP tool name, else "other";
`status` is the HTTP status; `action` is what the proxy did (forward, local, gone, disabled,
brownout, or "-" when it refused before dispatch). One registry per app: tests and `explain` build
many apps in one process.

With several workers (`serve --workers N`) each worker writes its values to files in
prometheus-client's multiprocess directory (`PROMETHEUS_MULTIPROC_DIR`, set up and cleaned by
`serve`), and `/metrics` sums all workers' files: one scrape reports the whole server, histograms
included (their buckets, sums and counts add up).
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..call import Call

#: Latency buckets for a proxy in front of a remote API: 1 ms (local answers) to 60 s (submits).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Distinct caller label values ever handed out; later newcomers are reported as "other".
MAX_CALLERS = 200

OTHER = "other"
ANONYMOUS = "anonymous"
UNMATCHED = "unmatched"

#: call.sdk is "<name>-<version>" (classic/identity.py normalizes the name); the label keeps major.minor.
_SDK_VERSION = re.compile(r"^(\d{1,3})(?:\.(\d{1,3}))?")

#: HTTP tools recognized from the User-Agent, reported without their version.
_AGENTS = (
    ("curl/", "curl"),
    ("wget/", "wget"),
    ("python-requests/", "python-requests"),
    ("python-httpx/", "python-httpx"),
    ("python-urllib3/", "python-urllib3"),
    ("python-urllib/", "python-urllib"),
    ("aiohttp", "python-aiohttp"),
    ("go-http-client/", "go-http-client"),
    ("postmanruntime/", "postman"),
    ("axios/", "node"),
    ("node-fetch", "node"),
    ("node", "node"),
    ("okhttp/", "java-okhttp"),
    ("java/", "java"),
    ("grafana", "grafana"),
    ("prometheus", "prometheus"),
    ("mozilla/", "browser"),
)


def agent_label(call: Call) -> str:
    """The calling software, bounded: "qiskit_ibm_runtime-0.40", "curl", ..., or "other"."""
    sdk = call.sdk
    if sdk != OTHER:
        name, _, version = sdk.partition("-")
        m = _SDK_VERSION.match(version)
        if not m:
            return name
        return f"{name}-{m.group(1)}.{m.group(2) or '0'}"
    raw = call.headers.get("user-agent", "")
    label = _AGENT_SEEN.get(raw)
    if label is None:
        label = _agent(raw)
        if len(_AGENT_SEEN) < 4096:  # a bounded memo: callers send the same few agents every time
            _AGENT_SEEN[raw] = label
    return label


_AGENT_SEEN: dict[str, str] = {}


def _agent(raw: str) -> str:
    ua = raw[:64].lower()
    if ua:
        for prefix, label in _AGENTS:
            if ua.startswith(prefix):
                return label
    return OTHER


class CallerLabels:
    """Hands out caller labels, at most `limit` distinct ones; the rest become "other"."""

    def __init__(self, limit: int = MAX_CALLERS) -> None:
        self.limit = limit
        self._seen: set[str] = {OTHER}

    def bound(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) > self.limit:
            return OTHER
        self._seen.add(value)
        return value

    def client(self, call: Call) -> str:
        """The software label (SDK+version / tool), bounded."""
        return self.bound(agent_label(call))

    def caller(self, call: Call) -> str:
        """The one caller name of metrics, access log and usage report: the client-token name when
        the caller authenticated with one, else "anonymous" (the software is the `client` label)."""
        if call.authenticated and call.caller != ANONYMOUS:
            return self.bound(call.caller)
        return ANONYMOUS


class Metrics:
    """The proxy's Prometheus metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `*_created` series (process-wide switch in prometheus_client): they double the series
        # count and Prometheus does not need them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus-client's default collectors (process_*, python_info, python_gc_*), as any
        # Python exporter has them: memory, CPU, open files, restarts (process_start_time_seconds).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("qcp_build", "The running proxy: version and Python.", registry=r).info(
            {"version": _version(), "python": platform.python_version()}
        )
        self.requests = Counter(
            "qcp_requests",
            "Legacy requests by route template, caller, client software, status and action.",
            ("route", "caller", "client", "status", "action"),
            registry=r,
        )
        self.duration = Histogram(
            "qcp_request_duration_seconds",
            "Time from request received to answer sent, by route template and action.",
            ("route", "action"),
            buckets=BUCKETS,
            registry=r,
        )
        self.iam_refreshes = Counter("qcp_iam_token_refreshes", "IAM bearer tokens obtained.", registry=r)
        self.iam_failures = Counter("qcp_iam_token_failures", "Failed IAM token exchanges.", registry=r)
        self.upstream_errors = Counter(
            "qcp_upstream_errors",
            "Forwarded requests the new API failed: unreachable, timeout, pool full, unknown "
            "outcome, or a 5xx answer (kind=http_5xx).",
            ("route", "kind"),
            registry=r,
        )
        self.refused = Counter(
            "qcp_refused",
            "Callers refused before their request ran: header too large/too many/timeout, too many "
            "connections, bad transfer coding, wrong client tokens throttled (SECURITY.md).",
            ("reason",),
            registry=r,
        )
        self.upstream_retries = Counter(
            "qcp_upstream_retries", "GET/HEAD requests sent again after the connection failed before any answer.",
            registry=r,
        )
        self.submission_lookups = Counter(
            "qcp_submission_lookups",
            "Job submissions whose answer was lost, looked up by their marker tag: found (answered as "
            "created) or not_found (answered 409 outcome_unknown).",
            ("outcome",),
            registry=r,
        )
        self.usage_flush_failures = Counter(
            "qcp_usage_flush_failures", "Failed writes of the persistent usage record.", registry=r
        )
        self.usage_record_up = Gauge(
            "qcp_usage_record_up",
            "1 while the usage record is written, 0 while counts wait in memory (the lowest over workers).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.usage_record_up.set(1)
        self.shared_state_up = Gauge(
            "qcp_shared_state_up",
            "1 while the shared database (instance memory, logouts) answers, 0 while each process "
            "falls back to its own memory (the lowest over workers; 1 without a shared database).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.shared_state_up.set(1)
        self.usage_folded = Counter(
            "qcp_usage_folded",
            "Requests counted as caller/client \"other\" because too many distinct keys waited in memory.",
            registry=r,
        )
        # Children cached per label tuple: labels() takes a lock and builds a key every call.
        self._req: dict[tuple[str, str, str, int, str], Any] = {}
        self._dur: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, caller: str, client: str, status: int, action: str, seconds: float) -> None:
        key = (route, caller, client, status, action)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests.labels(route, caller, client, str(status), action)
        child.inc()
        dkey = (route, action)
        hist = self._dur.get(dkey)
        if hist is None:
            hist = self._dur[dkey] = self.duration.labels(route, action)
        hist.observe(seconds)

    def iam_event(self, event: str) -> None:
        if event == "refresh":
            self.iam_refreshes.inc()
        elif event == "failure":
            self.iam_failures.inc()

    def upstream_error(self, route: str, kind: str) -> None:
        self.upstream_errors.labels(route, kind).inc()

    def submission_lookup(self, outcome: str) -> None:
        self.submission_lookups.labels(outcome).inc()

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def usage_state(self, up: bool) -> None:
        self.usage_record_up.set(1 if up else 0)

    def shared_state(self, up: bool) -> None:
        self.shared_state_up.set(1 if up else 0)

    def close(self) -> None:
        """A worker leaving: its live gauges stop counting in the other workers' scrapes."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    def render(self) -> tuple[bytes, str]:
        """This app's registry; in multiprocess mode, the sum over every worker's files."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _version() -> str:
    try:
        return metadata.version("qiskit-classic-proxy")
    except metadata.PackageNotFoundError:
        return "unknown"

def multiprocess_dir() -> str | None:
    """The multiprocess directory, if this process runs as one of several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


def prepare_multiprocess_dir(path: str = "") -> tuple[str, bool]:
    """The directory for `--workers N` (created, emptied of old files); (path, whether a temp dir)."""
    chosen = path or multiprocess_dir()
    if not chosen:
        return tempfile.mkdtemp(prefix="qcp-metrics-"), True
    d = Path(chosen)
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.db"):
        old.unlink()
    return str(d), False
