"""What the legacy SDKs need back, and instance routing, through real servers (no SDK involved).

The SDKs themselves are driven in tests/legacy/test_legacy_sdks.py; these pin each behaviour down.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from .conftest import EmulatorHandle, Running

R40 = {"X-Qx-Client-Application": "qiskit-version-2/qiskit_ibm_runtime-0.40.1,qiskit-2.6.2*/qiskit"}
R23 = {"X-Qx-Client-Application": "qiskit-version-2/qiskit_ibm_runtime-0.23.0,qiskit-1.0.2*/qiskit"}
PROVIDER = {"X-Qx-Client-Application": "qiskit/0.46.3"}
RESEARCH = "ibm-q-fake/research/proj1"
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}


@pytest.fixture(scope="module")
def multi(emulator: EmulatorHandle) -> Iterator[Running]:
    from .conftest import proxy_settings, start_proxy

    running = start_proxy(proxy_settings(emulator.url, instances={RESEARCH: SECOND_CRN}))
    yield running
    running.server.stop()


@pytest.fixture
def mc(multi: Running, emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    emulator.clear()
    with httpx.Client(base_url=multi.url, timeout=20) as c:
        yield c


def crn_of_last(emulator: EmulatorHandle) -> str:
    return emulator.api_requests()[-1]["headers"]["service-crn"]


def complete(c: httpx.Client, job_id: str) -> None:
    for _ in range(10):
        if c.get(f"/runtime/jobs/{job_id}").json()["state"]["status"] == "Completed":
            return
    raise AssertionError("job did not complete")


# ------------------------------------------------------------------------------------------- instances


def test_network_lists_every_instance_default_first(mc: httpx.Client) -> None:
    hubs = mc.get("/api/Network").json()
    assert [h["name"] for h in hubs] == ["ibm-q", "ibm-q-fake"]
    assert hubs[0]["groups"]["open"]["projects"]["main"]["isDefault"] is True
    assert hubs[1]["groups"]["research"]["projects"]["proj1"]["isDefault"] is False


def test_provider_query_picks_the_service_crn(mc: httpx.Client, emulator: EmulatorHandle) -> None:
    assert mc.get("/runtime/backends", params={"provider": RESEARCH}).status_code == 200
    assert crn_of_last(emulator) == SECOND_CRN
    assert mc.get("/runtime/backends").status_code == 200
    assert crn_of_last(emulator) == DEMO_CRN


def test_job_follows_its_instance_on_later_calls(mc: httpx.Client, emulator: EmulatorHandle) -> None:
    hub, group, project = RESEARCH.split("/")
    r = mc.post("/runtime/jobs", json={**JOB, "hub": hub, "group": group, "project": project})
    assert r.status_code in (200, 201), r.text
    assert crn_of_last(emulator) == SECOND_CRN
    assert (r.json()["hub"], r.json()["project"]) == (hub, project)
    job_id = r.json()["id"]
    # No provider on follow-ups, as the SDKs do: still the research instance.
    got = mc.get(f"/runtime/jobs/{job_id}")
    assert got.status_code == 200, got.text
    assert crn_of_last(emulator) == SECOND_CRN
    assert got.json()["hub"] == hub
    assert mc.post(f"/runtime/jobs/{job_id}/cancel").status_code in (204, 409)
    assert crn_of_last(emulator) == SECOND_CRN


def test_session_follows_its_instance(mc: httpx.Client, emulator: EmulatorHandle) -> None:
    r = mc.post("/runtime/sessions", json={"backend": "fake_manila", "instance": RESEARCH, "max_session_ttl": 60})
    assert r.status_code in (200, 201), r.text
    assert crn_of_last(emulator) == SECOND_CRN
    sid = r.json()["id"]
    assert mc.get(f"/runtime/sessions/{sid}").status_code == 200
    assert crn_of_last(emulator) == SECOND_CRN
    assert mc.patch(f"/runtime/sessions/{sid}", json={"accepting_jobs": False}).status_code == 204
    assert crn_of_last(emulator) == SECOND_CRN


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("GET", "/runtime/backends", {"params": {"provider": "nope/nope/nope"}}),
        ("POST", "/runtime/jobs", {"json": {**JOB, "hub": "x", "group": "y", "project": "z"}}),
        ("POST", "/runtime/sessions", {"json": {"backend": "fake_manila", "instance": "x/y/z"}}),
    ],
)
def test_unknown_instance_is_refused_not_defaulted(
    mc: httpx.Client, emulator: EmulatorHandle, method: str, path: str, kw: dict[str, Any]
) -> None:
    r = mc.request(method, path, **kw)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "unknown_instance"
    assert emulator.api_requests() == []


def test_fanout_list_refuses_a_non_integer_limit(mc: httpx.Client, emulator: EmulatorHandle) -> None:
    r = mc.get("/runtime/jobs", params={"limit": "lots"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "invalid_query"
    assert emulator.api_requests() == []


# ------------------------------------------------------------------------------ answers the SDKs read


def test_results_are_reencoded_only_for_runtime_older_than_0_25(client: httpx.Client) -> None:
    job_id = client.post("/runtime/jobs", json=JOB).json()["id"]
    complete(client, job_id)
    new = client.get(f"/runtime/jobs/{job_id}/results", headers=R40).json()
    old = client.get(f"/runtime/jobs/{job_id}/results", headers=R23).json()
    new_pub, old_pub = new["__value__"]["pub_results"][0], old["__value__"]["pub_results"][0]
    assert new_pub["__type__"] == "SamplerPubResult"
    assert "field_types" not in new_pub["__value__"]["data"]["__value__"]
    assert old_pub["__type__"] == "PubResult"
    assert old_pub["__value__"]["data"]["__value__"]["field_types"] == ["BitArray"]
    # the data itself is untouched
    assert old_pub["__value__"]["data"]["__value__"]["fields"] == new_pub["__value__"]["data"]["__value__"]["fields"]


def test_job_list_excludes_params_unless_asked(client: httpx.Client, emulator: EmulatorHandle) -> None:
    client.get("/runtime/jobs", params={"limit": 2})
    assert emulator.api_requests()[-1]["query"]["exclude_params"] == ["true"]
    client.get("/runtime/jobs", params={"limit": 2, "exclude_params": "False"})
    assert emulator.api_requests()[-1]["query"]["exclude_params"] == ["false"]


def test_job_list_paging_with_offset(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/runtime/jobs", json=JOB)
    total = client.get("/runtime/jobs", params={"limit": 200}).json()["count"]
    seen, offset = [], 0
    for _ in range(total + 2):  # the provider pages until an empty page
        page = client.get("/runtime/jobs", params={"limit": 2, "offset": offset}).json()["jobs"]
        if not page:
            break
        seen += [j["id"] for j in page]
        offset += len(page)
    assert len(seen) == len(set(seen)) == total


def test_jobs_carry_top_level_status(client: httpx.Client) -> None:
    job_id = client.post("/runtime/jobs", json=JOB).json()["id"]
    job = client.get(f"/runtime/jobs/{job_id}").json()
    assert job["status"] == job["state"]["status"]
    assert (job["hub"], job["group"], job["project"]) == ("ibm-q", "open", "main")


def test_metrics_carry_quantum_seconds(client: httpx.Client) -> None:
    job_id = client.post("/runtime/jobs", json=JOB).json()["id"]
    complete(client, job_id)
    usage = client.get(f"/runtime/jobs/{job_id}/metrics").json()["usage"]
    assert usage["quantum_seconds"] == usage["qpu_charge_time_seconds"]


def test_defaults_are_always_2xx(client: httpx.Client) -> None:
    assert client.get("/runtime/backends/fake_manila/defaults").status_code == 200
    r = client.get("/runtime/backends/no_such_backend/defaults")
    assert r.status_code == 200
    assert r.json() == {}


def test_job_not_found_carries_the_classic_error_and_3250(client: httpx.Client) -> None:
    r = client.get("/runtime/jobs/doesnotexist123", headers=PROVIDER)
    assert r.status_code == 404
    body = r.json()
    assert body["errors"][0]["message"]  # the new shape is kept
    assert body["error"]["code"] == 3250
    assert "Error code: 3250." in body["error"]["message"]


@pytest.mark.parametrize("headers", [R40, R23, PROVIDER, {"X-Access-Token": "anything"}])
def test_usage_is_answered_for_legacy_sdks(
    client: httpx.Client, emulator: EmulatorHandle, headers: dict[str, str]
) -> None:
    usage = client.get("/runtime/usage", headers=headers)
    assert usage.status_code == 200
    assert usage.json()["byInstance"][0]["pendingJobs"] == 0
    assert emulator.api_requests() == []


@pytest.mark.parametrize("headers", [R23, PROVIDER])
def test_job_type_of_an_unknown_job_is_the_providers_not_found(
    client: httpx.Client, emulator: EmulatorHandle, headers: dict[str, str]
) -> None:
    """Only translated jobs are RUNTIME (tests/programs/); an unknown one must read as 3250 so
    the provider's retrieve_job raises IBMJobNotFoundError."""
    typ = client.get("/runtime/facade/v1/jobs/abc/type", headers=headers)
    assert typ.status_code == 404
    assert "Error code: 3250." in typ.json()["error"]["message"]
    assert [r["path"] for r in emulator.api_requests()] == ["/api/v1/jobs/abc"]


@pytest.mark.parametrize("program", ["circuit-runner", "qasm3-runner"])
def test_retired_programs_get_a_clear_4xx_when_translation_is_off(
    make_proxy: Any, emulator: EmulatorHandle, program: str
) -> None:
    p = make_proxy(routes={"POST /jobs": {"programs": "refuse"}})
    emulator.clear()
    r = httpx.post(p.url + "/runtime/jobs", json={"program_id": program, "backend": "fake_manila", "params": {}})
    assert r.status_code == 400
    err = r.json()
    assert err["errors"][0]["code"] == "program_retired"
    assert "SamplerV2" in err["error"]["message"]
    assert emulator.api_requests() == []


@pytest.mark.parametrize("program", ["circuit-runner", "qasm3-runner"])
def test_runner_jobs_without_circuits_get_a_clear_400(
    client: httpx.Client, emulator: EmulatorHandle, program: str
) -> None:
    r = client.post("/runtime/jobs", json={"program_id": program, "backend": "fake_manila", "params": {}})
    assert r.status_code == 400
    assert "'circuits'" in r.json()["error"]["message"]
    assert emulator.api_requests() == []


def test_login_flow_points_sdks_back_at_the_proxy(client: httpx.Client, proxy: Running) -> None:
    assert "api-auth" in client.get("/api/version").json()
    token = client.post("/api/users/loginWithToken", json={"apiToken": "whatever"}).json()["id"]
    me = client.get("/api/users/me", headers={"X-Access-Token": token}).json()
    assert me["urls"]["http"] == proxy.url + "/api"
    assert me["urls"]["services"]["runtime"] == proxy.url + "/runtime"


def test_public_url_overrides_the_advertised_base(make_proxy: Any) -> None:
    p = make_proxy(public_url="http://proxy.internal:9000")
    me = httpx.get(p.url + "/api/users/me", timeout=10).json()
    assert me["urls"]["services"]["runtime"] == "http://proxy.internal:9000/runtime"
