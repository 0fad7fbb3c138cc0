"""Prometheus metrics with bounded labels: who still calls which legacy route, how it went.

Labels never carry ids or raw paths. `route` is the legacy route *template* ("GET /jobs/{job_id}")
or "unmatched"; `caller` is a client-token name, else the SDK and its major.minor version, else a
known HTTP tool name, else "other", and at most `MAX_CALLERS` distinct values ever (then "other");
`status` is the HTTP status; `action` is what the proxy did (forward, local, gone, disabled,
brownout, or "-" when it refused before dispatch). One registry per app: tests and `explain` build
many apps in one process.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..call import Call

#: Latency buckets for a proxy in front of a remote API: 1 ms (local answers) to 60 s (submits).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Distinct caller label values ever handed out; later newcomers are reported as "other".
MAX_CALLERS = 200

OTHER = "other"
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

    def caller(self, call: Call, client: str | None = None) -> str:
        """Client-token name when the caller authenticated with one, else the software label."""
        if call.authenticated and call.caller != "anonymous":
            return self.bound(call.caller)
        return client if client is not None else self.client(call)


class Metrics:
    """The proxy's Prometheus metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `*_created` series (process-wide switch in prometheus_client): they double the series
        # count and Prometheus does not need them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "qcp_requests",
            "Legacy requests by route template, caller, status and action.",
            ("route", "caller", "status", "action"),
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
        self.usage_flush_failures = Counter(
            "qcp_usage_flush_failures", "Failed writes of the persistent usage record.", registry=r
        )
        # Children cached per label tuple: labels() takes a lock and builds a key every call.
        self._req: dict[tuple[str, str, int, str], Any] = {}
        self._dur: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, caller: str, status: int, action: str, seconds: float) -> None:
        key = (route, caller, status, action)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests.labels(route, caller, str(status), action)
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

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
