"""Prometheus metrics at /metrics through real servers: content after traffic, bounded labels."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.call import Call
from proxy.classic.routes import ROUTES
from proxy.phaseout.metrics import CallerLabels, Metrics, agent_label
from proxy.serving import free_port

from .conftest import EmulatorHandle, Running

ROUTE_KEYS = {r.key for r in ROUTES}
CI_TOKEN = "tok-ci-pipeline-0001"


def scrape(p: Running, **kw: Any) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    r = httpx.get(p.url + "/metrics", timeout=10, trust_env=False, **kw)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return r.text, samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


# ============================================================================ unit: labels


def call(sdk: str = "other", ua: str = "", caller: str = "anonymous", authenticated: bool = False) -> Call:
    c = Call(request_id="r", method="GET", path="/jobs", headers={"user-agent": ua} if ua else {})
    c.sdk, c.caller, c.authenticated = sdk, caller, authenticated
    return c


@pytest.mark.parametrize(
    ("kw", "label"),
    [
        ({"sdk": "qiskit_ibm_runtime-0.40.1"}, "qiskit_ibm_runtime-0.40"),
        ({"sdk": "qiskit_ibm_runtime-0.23.0"}, "qiskit_ibm_runtime-0.23"),
        ({"sdk": "qiskit_ibm_provider-0.11.0"}, "qiskit_ibm_provider-0.11"),
        ({"sdk": "qiskit_ibm_provider"}, "qiskit_ibm_provider"),
        ({"ua": "curl/8.5.0"}, "curl"),
        ({"ua": "python-requests/2.32.3"}, "python-requests"),
        ({"ua": "Mozilla/5.0 (X11; Linux x86_64)"}, "browser"),
        ({"ua": "Grafana/11.2.0"}, "grafana"),
        ({"ua": "totally-custom-client/" + "9" * 40}, "other"),
        ({}, "other"),
    ],
)
def test_agent_label(kw: dict[str, str], label: str) -> None:
    assert agent_label(call(**kw)) == label


def test_caller_label_is_the_client_token_name_or_anonymous_and_is_capped() -> None:
    labels = CallerLabels(limit=10)
    assert labels.caller(call(caller="ci-pipeline", authenticated=True, ua="curl/8")) == "ci-pipeline"
    # A login without client tokens is "anonymous", as in the access log and the usage report;
    # the software is the separate `client` label.
    assert labels.caller(call(caller="anonymous", authenticated=True, ua="curl/8")) == "anonymous"
    assert labels.client(call(caller="anonymous", authenticated=True, ua="curl/8")) == "curl"
    seen = {labels.caller(call(caller=f"name-{i}", authenticated=True)) for i in range(500)}
    assert len(seen) <= 11 and "other" in seen


def test_metrics_registries_are_per_app() -> None:
    a, b = Metrics(), Metrics()  # same names, no "Duplicated timeseries" error
    a.observe("GET /jobs", "anonymous", "curl", 200, "forward", 0.01)
    assert b"qcp_requests_total" in b.render()[0]
    assert 'route="GET /jobs"' in a.render()[0].decode()
    assert 'route="GET /jobs"' not in b.render()[0].decode()


# ============================================================================ through the proxy


def test_requests_latency_and_iam_after_traffic(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy()
    with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
        old_sdk = {"User-Agent": "qiskit-ibm-runtime/0.23.0 (Python)"}
        new_sdk = {"X-Qx-Client-Application": "qiskit-version-2/1.4/qiskit_ibm_runtime-0.40.1"}
        assert c.get("/runtime/backends", headers=old_sdk).status_code == 200
        for _ in range(2):
            assert c.get("/runtime/backends", headers=new_sdk).status_code == 200
        assert c.get("/runtime/health", headers={"User-Agent": "curl/8.5.0"}).status_code == 410
        assert c.get("/api/version", headers={"User-Agent": "curl/8.5.0"}).status_code == 200
    text, s = scrape(p)
    req = "qcp_requests_total"
    anon = {"caller": "anonymous"}
    assert value(s, req, route="GET /backends", client="qiskit_ibm_runtime-0.23", status="200", action="forward",
                 **anon) == 1
    assert value(s, req, route="GET /backends", client="qiskit_ibm_runtime-0.40", status="200", action="forward",
                 **anon) == 2
    assert value(s, req, route="GET /health", client="curl", status="410", action="gone", **anon) == 1
    assert value(s, req, route="GET /version", client="curl", status="200", action="local", **anon) == 1
    # Latency histogram: every request observed once, in seconds, under the route template.
    assert value(s, "qcp_request_duration_seconds_count", route="GET /backends", action="forward") == 3
    assert value(s, "qcp_request_duration_seconds_bucket", route="GET /backends", le="60.0") == 3
    assert 0 < value(s, "qcp_request_duration_seconds_sum", route="GET /backends") < 30
    assert value(s, "qcp_iam_token_refreshes_total") >= 1
    assert value(s, "qcp_iam_token_failures_total") == 0
    for name in ("qcp_upstream_errors", "qcp_usage_flush_failures"):
        assert f"# TYPE {name}_total counter" in text
    assert "_created" not in text  # no creation-time series: half the series count for nothing


def test_labels_stay_bounded_under_many_ids_and_user_agents(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy()
    ids = [f"job{uuid.uuid4().hex[:12]}" for _ in range(120)]
    rng = random.Random(7)
    with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
        for i, job in enumerate(ids):
            ua = f"agent-{uuid.uuid4().hex}/{rng.randint(0, 10**6)}"
            if i % 3 == 1:
                ua = f"qiskit-ibm-runtime/0.{rng.randint(20, 40)}.{rng.randint(0, 99)} rand/{uuid.uuid4().hex}"
            assert c.get(f"/runtime/jobs/{job}", headers={"User-Agent": ua}).status_code == 404
        for job in ids[:40]:  # unknown paths: grouped as "unmatched", the path never becomes a label
            assert c.get(f"/runtime/nope/{job}/x").status_code == 404
            assert c.get(f"/runtime/jobs/{job}/bogus").status_code == 404
    text, s = scrape(p)
    for job in ids:
        assert job not in text
    assert "/nope" not in text and "agent-" not in text and "rand/" not in text
    series = s["qcp_requests_total"]
    routes = {lab["route"] for lab, _ in series}
    callers = {lab["caller"] for lab, _ in series}
    clients = {lab["client"] for lab, _ in series}
    assert routes <= ROUTE_KEYS | {"unmatched"}
    assert routes == {"GET /jobs/{job_id}", "unmatched"}
    assert callers == {"anonymous"}
    assert clients <= {"other", "python-httpx"} | {f"qiskit_ibm_runtime-0.{m}" for m in range(20, 41)}
    assert len(series) <= 25  # 120 ids x random agents collapse to a handful of series
    assert value(s, "qcp_requests_total", route="GET /jobs/{job_id}", status="404") == 120
    assert value(s, "qcp_requests_total", route="unmatched", status="404") == 80


def test_client_token_names_are_the_caller_label(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(client_tokens=[f"ci-pipeline={CI_TOKEN}"])
    with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
        assert c.get("/runtime/backends", headers={"Authorization": f"Bearer {CI_TOKEN}"}).status_code == 200
        assert c.get("/runtime/backends").status_code == 401  # no token: refused, counted by software
    text, s = scrape(p)
    assert value(s, "qcp_requests_total", route="GET /backends", caller="ci-pipeline", status="200") == 1
    assert value(s, "qcp_requests_total", route="GET /backends", caller="anonymous", client="python-httpx",
                 status="401", action="-") == 1
    assert CI_TOKEN not in text


def test_iam_failures_are_counted(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(api_key="not-the-right-api-key")
    r = httpx.get(p.url + "/runtime/backends", timeout=20, trust_env=False)
    assert r.status_code == 502 and r.json()["errors"][0]["code"] == "iam_api_key_rejected"
    text, s = scrape(p)
    assert value(s, "qcp_iam_token_failures_total") >= 1
    assert value(s, "qcp_iam_token_refreshes_total") == 0
    assert "not-the-right-api-key" not in text


def test_upstream_errors_by_kind(make_proxy: Callable[..., Running], emulator: EmulatorHandle) -> None:
    dead = make_proxy(upstream_url=f"http://127.0.0.1:{free_port()}/api")
    r = httpx.get(dead.url + "/runtime/backends/fake_manila/status", timeout=20, trust_env=False)
    assert r.status_code == 502
    _, s = scrape(dead)
    assert value(s, "qcp_upstream_errors_total", route="GET /backends/{backend}/status",
                 kind="upstream_unreachable") == 1

    p = make_proxy()
    emulator.state.set_faults(add_rules=[{"match": "GET /v1/backends/*/properties", "action": "status",
                                          "status": 503, "times": 2}])
    try:
        with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
            got = [c.get("/runtime/backends/fake_manila/properties").status_code for _ in range(3)]
    finally:
        emulator.state.set_faults(clear=True)
    assert got == [503, 503, 200]
    _, s = scrape(p)
    assert value(s, "qcp_upstream_errors_total", route="GET /backends/{backend}/properties", kind="http_5xx") == 2
    assert value(s, "qcp_requests_total", route="GET /backends/{backend}/properties", status="503") == 2


def test_metrics_can_be_switched_off(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(metrics=False)
    assert httpx.get(p.url + "/runtime/backends", timeout=20, trust_env=False).status_code == 200
    assert httpx.get(p.url + "/metrics", timeout=10, trust_env=False).status_code == 404


def test_metrics_closed_to_client_token_callers(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(client_tokens=[f"ci-pipeline={CI_TOKEN}"])
    r = httpx.get(p.url + "/metrics", headers={"Authorization": f"Bearer {CI_TOKEN}"}, timeout=10, trust_env=False)
    assert r.status_code == 403
    scrape(p)  # the operator on loopback without a token: allowed


@pytest.mark.parametrize("token", [None, CI_TOKEN])
def test_one_caller_name_across_metrics_access_log_and_usage_report(
    make_proxy: Callable[..., Running], json_logs: list[str], token: str | None
) -> None:
    """Regression: an anonymous curl was "curl" in the metrics but "anonymous" in the access log and
    the report. Now caller = client-token name or "anonymous" everywhere, the software is `client`."""
    p = make_proxy(**({"client_tokens": [f"ci-pipeline={token}"]} if token else {}))
    headers = {"User-Agent": "curl/8.5.0", **({"Authorization": f"Bearer {token}"} if token else {})}
    assert httpx.get(p.url + "/runtime/backends", headers=headers, timeout=20, trust_env=False).status_code == 200
    want = "ci-pipeline" if token else "anonymous"
    _, s = scrape(p)
    assert value(s, "qcp_requests_total", route="GET /backends", caller=want, client="curl") == 1
    access = [json.loads(ln) for ln in json_logs if '"qiskit_classic_proxy.access"' in ln]
    assert [d["caller"] for d in access if d["route"] == "GET /backends"] == [want]
    report = httpx.get(p.url + "/admin/usage", timeout=20, trust_env=False).json()
    got = {(d["caller"], d["client"]) for d in report["in_use"] if d["endpoint"] == "GET /backends"}
    assert got == {(want, "curl")}
