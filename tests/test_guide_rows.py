"""Every row of IBM's migration guide, through real servers: caller -> proxy -> emulator.

Expected new paths are written here from the guide's tables
(tests/data/migration-guide.txt, from IBM's public guide), not derived from proxy/classic/routes.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.emulator import DEMO_CRN

from .conftest import EmulatorHandle

PREFIXES = ["/runtime", "/api", ""]


def only_request(emulator: EmulatorHandle) -> dict[str, Any]:
    reqs = emulator.api_requests()
    assert len(reqs) == 1, [f"{r['method']} {r['path']}" for r in reqs]
    return reqs[0]


def assert_new_api_request(req: dict[str, Any], method: str, path: str) -> None:
    """What the real new API needs, and nothing a legacy caller brought along."""
    assert req["method"] == method
    assert req["path"] == "/api" + path
    h = req["headers"]
    assert h["authorization"].startswith("Bearer ")
    assert h["service-crn"] == DEMO_CRN
    assert len(h["ibm-api-version"]) == 10
    assert h.get("x-request-id")
    for leaked in ("x-access-token", "cookie"):
        assert leaked not in h
    assert "provider" not in req["query"]


@pytest.fixture(scope="module")
def job_id(proxy: Any, emulator: EmulatorHandle) -> str:
    with httpx.Client(base_url=proxy.url, timeout=20) as c:
        r = c.post("/runtime/jobs", json={"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}})
        assert r.status_code in (200, 201), r.text
        jid = r.json()["id"]
        for _ in range(10):  # the emulator completes a job after a few polls
            if c.get(f"/runtime/jobs/{jid}").json()["state"]["status"] == "Completed":
                break
        return jid


@pytest.fixture(scope="module")
def session_id(proxy: Any) -> str:
    with httpx.Client(base_url=proxy.url, timeout=20) as c:
        r = c.post("/runtime/sessions", json={"backend": "fake_manila", "mode": "dedicated", "max_session_ttl": 600})
        assert r.status_code in (200, 201), r.text
        return r.json()["id"]


# ------------------------------------------------------------ "Changes to account- and instance-related endpoints"


def test_get_health_is_gone(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/health")
    assert r.status_code == 410
    body = r.json()
    assert body["errors"][0]["code"] == "endpoint_removed"
    assert body["replacement"] == "none"
    assert emulator.api_requests() == []


def test_post_auth_validate_is_gone(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.post("/api/auth/validate", json={"token": "x"})
    assert r.status_code == 410
    assert r.json()["replacement"] == "none"
    assert emulator.api_requests() == []


def test_get_users_me_is_answered_locally(client: httpx.Client, emulator: EmulatorHandle) -> None:
    # Guide: /users/me -> /v1/accounts/{id}. Legacy SDKs need the Classic shape (their base URLs), so the
    # proxy answers it, pointing them back at itself.
    r = client.get("/api/users/me")
    assert r.status_code == 200
    urls = r.json()["urls"]
    assert urls["http"] == f"{client.base_url}api".rstrip("/") or urls["http"].endswith("/api")
    assert urls["services"]["runtime"].endswith("/runtime")
    assert emulator.api_requests() == []


def test_post_logout_is_answered_locally(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.post("/api/logout")
    assert r.status_code == 204
    assert emulator.api_requests() == []


def test_get_instances_goes_to_instances_usage(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/instances")
    assert r.status_code == 200, r.text
    assert_new_api_request(only_request(emulator), "GET", "/v1/instances/usage")


@pytest.mark.parametrize(
    ("method", "legacy", "new", "body"),
    [
        ("GET", "/instance", "/v1/instance", None),
        ("GET", "/instances/configuration", "/v1/instances/configuration", None),
        ("PUT", "/instances/configuration", "/v1/instances/configuration", {"instance_limit": 600}),
        ("GET", "/instances/usage", "/v1/instances/usage", None),
    ],
)
def test_instance_replacements_pass_through(
    client: httpx.Client, emulator: EmulatorHandle, method: str, legacy: str, new: str, body: Any
) -> None:
    r = client.request(method, "/runtime" + legacy, json=body)
    assert r.status_code < 300, r.text
    req = only_request(emulator)
    assert_new_api_request(req, method, new)
    if body is not None:
        assert req["body"] == body


# --------------------------------------------------------------------------------- "Changes to job-related endpoints"


@pytest.mark.parametrize("legacy", ["/facade/v1/jobs", "/jobs"])
def test_get_job_list_drops_provider(client: httpx.Client, emulator: EmulatorHandle, legacy: str, job_id: str) -> None:
    emulator.clear()
    r = client.get(f"/runtime{legacy}", params={"provider": "ibm-q/open/main", "limit": 5, "exclude_params": "False"})
    assert r.status_code == 200, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "GET", "/v1/jobs")
    assert req["query"]["limit"] == ["5"]
    assert req["query"]["exclude_params"] == ["false"]
    jobs = r.json()["jobs"]
    assert jobs and all(j["hub"] == "ibm-q" and j["group"] == "open" and j["project"] == "main" for j in jobs)


@pytest.mark.parametrize("legacy", ["/facade/v1/jobs", "/jobs"])
def test_post_job_drops_hub_group_project_private(client: httpx.Client, emulator: EmulatorHandle, legacy: str) -> None:
    submitted = {
        "program_id": "sampler",
        "backend": "fake_manila",
        "hub": "ibm-q",
        "group": "open",
        "project": "main",
        "private": True,
        "params": {"pubs": [], "version": 2},
        "log_level": "WARNING",
        "tags": ["t1"],
        "some_future_field": {"kept": True},
    }
    # 0.23.0 and the provider send JSON without a Content-Type: it must still be parsed.
    r = client.post(f"/runtime{legacy}", content=httpx.Request("POST", "/", json=submitted).content)
    assert r.status_code in (200, 201), r.text
    req = only_request(emulator)
    assert_new_api_request(req, "POST", "/v1/jobs")
    expected = {k: v for k, v in submitted.items() if k not in ("hub", "group", "project", "private")}
    body = req["body"]
    marker = body["tags"].pop()  # the proxy's exactly-once marker (proxy/submissions.py) goes last
    assert marker.startswith("qcp:req:")
    assert body == expected
    assert req["headers"]["content-type"] == "application/json"
    assert r.json()["id"]


def test_get_facade_job_tags_goes_to_v1_tags(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/facade/v1/jobs/tags", params={"search": "abc"})
    assert r.status_code == 200, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "GET", "/v1/tags")
    assert req["query"]["search"] == ["abc"]


def test_get_facade_job_type_is_gone_for_plain_callers(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/facade/v1/jobs/abc123/type")
    assert r.status_code == 410
    assert r.json()["replacement"] == "none"
    assert emulator.api_requests() == []


@pytest.mark.parametrize(
    ("method", "legacy", "new"),
    [
        ("GET", "/jobs/{id}", "/v1/jobs/{id}"),
        ("GET", "/jobs/{id}/metrics", "/v1/jobs/{id}/metrics"),
        ("GET", "/jobs/{id}/interim_results", "/v1/jobs/{id}/interim_results"),
        ("GET", "/jobs/{id}/transpiled_circuits", "/v1/jobs/{id}/transpiled_circuits"),
        ("GET", "/jobs/{id}/logs", "/v1/jobs/{id}/logs"),
        ("GET", "/jobs/{id}/results", "/v1/jobs/{id}/results"),
    ],
)
def test_job_reads(
    client: httpx.Client, emulator: EmulatorHandle, job_id: str, method: str, legacy: str, new: str
) -> None:
    emulator.clear()
    r = client.request(method, "/runtime" + legacy.format(id=job_id))
    assert r.status_code < 500, r.text
    assert_new_api_request(only_request(emulator), method, new.format(id=job_id))


def test_put_job_tags(client: httpx.Client, emulator: EmulatorHandle, job_id: str) -> None:
    emulator.clear()
    r = client.put(f"/runtime/jobs/{job_id}/tags", content=b'{"tags": ["a", "b"]}')  # no Content-Type, like 0.23
    assert r.status_code == 204, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "PUT", f"/v1/jobs/{job_id}/tags")
    assert req["body"] == {"tags": ["a", "b"]}


def test_post_job_cancel_and_delete(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.post("/runtime/jobs", json={"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}})
    jid = r.json()["id"]
    emulator.clear()
    r = client.post(f"/runtime/jobs/{jid}/cancel")
    assert r.status_code == 204, r.text
    assert_new_api_request(only_request(emulator), "POST", f"/v1/jobs/{jid}/cancel")
    emulator.clear()
    r = client.delete(f"/runtime/jobs/{jid}")
    assert r.status_code == 204, r.text
    assert_new_api_request(only_request(emulator), "DELETE", f"/v1/jobs/{jid}")


# ---------------------------------------------------------------- "Changes to session- and workload-related endpoints"


def test_post_session_renames_ttl_and_drops_instance(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.post(
        "/runtime/sessions",
        json={"mode": "batch", "backend": "fake_manila", "instance": "ibm-q/open/main", "max_session_ttl": 3600},
    )
    assert r.status_code in (200, 201), r.text
    req = only_request(emulator)
    assert_new_api_request(req, "POST", "/v1/sessions")
    assert req["body"] == {"mode": "batch", "backend": "fake_manila", "max_ttl": 3600}


def test_post_session_parses_provider_duration_and_defaults_mode(
    client: httpx.Client, emulator: EmulatorHandle
) -> None:
    # qiskit-ibm-provider sends max_time="1h" raw; runtime 0.23.0 sends no mode.
    r = client.post("/runtime/sessions", json={"backend": "fake_manila", "max_session_ttl": "1h"})
    assert r.status_code in (200, 201), r.text
    assert only_request(emulator)["body"] == {"backend": "fake_manila", "max_ttl": 3600, "mode": "dedicated"}


@pytest.mark.parametrize(
    ("method", "legacy", "new", "body", "status"),
    [
        ("GET", "/sessions/{id}", "/v1/sessions/{id}", None, 200),
        ("PATCH", "/sessions/{id}", "/v1/sessions/{id}", {"accepting_jobs": False}, 204),
        ("DELETE", "/sessions/{id}/close", "/v1/sessions/{id}/close", None, 204),
    ],
)
def test_session_calls(
    client: httpx.Client, emulator: EmulatorHandle, session_id: str, method: str, legacy: str, new: str, body: Any,
    status: int,
) -> None:
    emulator.clear()
    r = client.request(method, "/runtime" + legacy.format(id=session_id), json=body)
    assert r.status_code == status, r.text
    req = only_request(emulator)
    assert_new_api_request(req, method, new.format(id=session_id))
    if body is not None:
        assert req["body"] == body


def test_get_session_extended_is_gone(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/sessions/abc/extended")
    assert r.status_code == 410
    assert r.json()["replacement"] == "none"
    assert emulator.api_requests() == []


def test_get_workloads_me(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/workloads/me", params={"limit": 3})
    assert r.status_code == 200, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "GET", "/v1/workloads")
    assert req["query"]["limit"] == ["3"]


# ------------------------------------------------------------------------------ "Changes to system-related endpoints"


def test_get_backends_drops_provider_and_answers_classic_names(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/backends", params={"provider": "ibm-q/open/main"})
    assert r.status_code == 200, r.text
    assert_new_api_request(only_request(emulator), "GET", "/v1/backends")
    assert "fake_manila" in r.json()["devices"]


@pytest.mark.parametrize(
    ("legacy", "new"),
    [
        ("/backends/fake_manila/status", "/v1/backends/fake_manila/status"),
        ("/backends/fake_manila/defaults", "/v1/backends/fake_manila/defaults"),
        ("/backends/fake_manila/properties", "/v1/backends/fake_manila/properties"),
        ("/v1/backends/fake_manila/configuration", "/v1/backends/fake_manila/configuration"),
        ("/backends/fake_manila/configuration", "/v1/backends/fake_manila/configuration"),
    ],
)
def test_backend_reads(client: httpx.Client, emulator: EmulatorHandle, legacy: str, new: str) -> None:
    r = client.get("/runtime" + legacy)
    assert r.status_code == 200, r.text
    assert_new_api_request(only_request(emulator), "GET", new)


# ------------------------------------------------------------------ "Changes to analytics- and usage-related endpoints"


def test_get_usage_is_gone_for_plain_callers(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/usage")
    assert r.status_code == 410
    assert r.json()["replacement"] == "none"
    assert emulator.api_requests() == []


@pytest.mark.parametrize(
    ("legacy", "new"),
    [
        ("/analytics/usage", "/v1/analytics/usage"),
        ("/analytics/filters", "/v1/analytics/filters"),
        # The guide spells these with hyphens; IBM's API spec (and its generated clients) use underscores,
        # which is what the live service routes. Both legacy spellings are accepted.
        ("/analytics/usage-grouped", "/v1/analytics/usage_grouped"),
        ("/analytics/usage-grouped-by-date", "/v1/analytics/usage_grouped_by_date"),
    ],
)
def test_analytics(client: httpx.Client, emulator: EmulatorHandle, legacy: str, new: str) -> None:
    r = client.get("/runtime" + legacy, params={"interval_start": "2026-01-01", "group_by": "backend"})
    assert r.status_code == 200, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "GET", new)
    assert req["query"]["interval_start"] == ["2026-01-01"]


# ------------------------------------------------------------------------------------------- prefixes and slashes


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("slash", ["", "/"])
def test_legacy_paths_match_under_every_prefix(
    client: httpx.Client, emulator: EmulatorHandle, prefix: str, slash: str
) -> None:
    r = client.get(f"{prefix}/backends{slash}")
    assert r.status_code == 200, r.text
    assert_new_api_request(only_request(emulator), "GET", "/v1/backends")


def test_unknown_path_is_404_json_and_not_forwarded(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/no/such/endpoint")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "unknown_endpoint"
    assert emulator.api_requests() == []


# -- qiskit-ibmq-provider 0.19/0.20: the per-hub/group/project surface (#18) -------------------------
HGP = "/api/Network/ibm-q/Groups/open/Projects/main"


def test_ibmq_devices_are_every_backends_configuration(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get(HGP + "/devices/v/1")
    assert r.status_code == 200, r.text
    configs = r.json()
    assert {c["backend_name"] for c in configs} == {"fake_manila", "fake_kyiv"}
    assert all(c["n_qubits"] >= 2 and c["basis_gates"] for c in configs)
    paths = sorted(req["path"] for req in emulator.api_requests())
    assert paths == ["/api/v1/backends", "/api/v1/backends/fake_kyiv/configuration",
                     "/api/v1/backends/fake_manila/configuration"]
    for req in emulator.api_requests():
        assert req["headers"]["service-crn"] == DEMO_CRN and req["headers"]["authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("tail", "new_path"),
    [("/devices/fake_manila/properties?version=1", "/v1/backends/fake_manila/properties"),
     ("/devices/fake_manila/defaults", "/v1/backends/fake_manila/defaults"),
     ("/devices/fake_manila/queue/status", "/v1/backends/fake_manila/status")],
)
def test_ibmq_device_reads_forward(client: httpx.Client, emulator: EmulatorHandle, tail: str, new_path: str) -> None:
    r = client.get(HGP + tail)
    assert r.status_code == 200, r.text
    req = only_request(emulator)
    assert_new_api_request(req, "GET", new_path)
    assert "version" not in req["query"]
    if tail.endswith("queue/status"):
        assert r.json()["lengthQueue"] == r.json()["length_queue"]


def test_ibmq_qobj_jobs_list_empty_and_submit_is_410(client: httpx.Client, emulator: EmulatorHandle) -> None:
    assert client.get(HGP + "/Jobs/status/v/1", params={"filter": '{"limit": 5}'}).json() == []
    r = client.post(HGP + "/Jobs", json={"backend": {"name": "fake_manila"}, "allowObjectStorage": True})
    assert r.status_code == 410 and "SamplerV2" in r.json()["errors"][0]["message"]
    assert emulator.api_requests() == []


def test_ibmq_unknown_hub_group_project_is_404(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/api/Network/nope/Groups/x/Projects/y/devices/v/1")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "unknown_instance"
    assert emulator.api_requests() == []
