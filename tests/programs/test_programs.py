"""Through real loopback servers (proxy + emulator): V1 submissions shaped exactly like the SDK
traces go in, SamplerV2/EstimatorV2 jobs reach the new API, and the answers come back V1-shaped."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.emulator import SECOND_CRN
from proxy.programs import MARKER

from ..conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy
from .test_encoding import DATA, submissions
from .v2results import estimator_result, sampler_result

V1 = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")
RUNNER = submissions("trace-qiskit-ibm-provider-0.11.0.jsonl")[0]
R20 = {"X-Qx-Client-Application": "qiskit-version-2/qiskit_ibm_runtime-0.20.0,qiskit_terra-0.46.3/qiskit"}
PROVIDER = {"X-Qx-Client-Application": "qiskit/0.46.3", "X-Access-Token": "provider-session"}


def settings(em: EmulatorHandle, **kw: Any) -> Any:
    """The provider trace's job names hub/group/project ibm-q-fake/research/proj1: a second instance."""
    return proxy_settings(em.url, usage_db=kw.pop("usage_db", ""), instances={"ibm-q-fake/research/proj1": SECOND_CRN},
                          **kw)  # fmt: skip


@pytest.fixture(scope="module")
def em() -> Iterator[EmulatorHandle]:
    from proxy.emulator import EmulatorConfig

    handle = start_emulator(EmulatorConfig(job_polls_to_complete=0))
    yield handle
    handle.server.stop()


@pytest.fixture(scope="module")
def px(em: EmulatorHandle) -> Iterator[Running]:
    running = start_proxy(settings(em))
    running.app.pipeline.programs.can_transpile = False  # circuits pass as sent (test_isa.py: the extra)
    yield running
    running.server.stop()


@pytest.fixture
def c(px: Running, em: EmulatorHandle) -> Iterator[httpx.Client]:
    em.clear()
    em.state.config.results.clear()
    with httpx.Client(base_url=px.url, timeout=20, trust_env=False) as client:
        yield client


def submit(c: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> str:
    """POST the body as the SDK does (raw JSON, no Content-Type from the provider)."""
    r = c.post("/runtime/jobs", content=json.dumps(body), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def upstream_job(em: EmulatorHandle) -> dict[str, Any]:
    posts = [r for r in em.api_requests() if r["method"] == "POST" and r["path"] == "/api/v1/jobs"]
    assert len(posts) == 1
    return posts[0]["body"]


def test_v1_sampler_runs_as_sampler_v2_and_answers_quasi_dists(c: httpx.Client, em: EmulatorHandle) -> None:
    em.state.config.results["sampler"] = sampler_result([[("c", [0, 3, 3, 0, 3], 2)]])
    job_id = submit(c, V1[0], R20)
    sent = upstream_job(em)
    assert sent["program_id"] == "sampler" and sent["params"]["version"] == 2
    assert sent["params"]["pubs"][0][0] == V1[0]["params"]["circuits"][0]
    assert not {"hub", "group", "project"} & set(sent) and MARKER + "sampler" in sent["tags"]
    res = c.get(f"/runtime/jobs/{job_id}/results", headers=R20)
    assert res.status_code == 200
    assert res.json() == {
        "quasi_dists": [{"0x0": 0.4, "0x3": 0.6}],
        "metadata": [{"shots": 5, "header_metadata": {}, "circuit_metadata": {}}],
    }
    job = c.get(f"/runtime/jobs/{job_id}", headers=R20).json()
    assert job["program"]["id"] == "sampler" and not any(t.startswith(MARKER) for t in job["tags"])


def test_v1_estimator_with_two_experiments(c: httpx.Client, em: EmulatorHandle) -> None:
    em.state.config.results["estimator"] = estimator_result([(1.5, 0.01), (0.25, 0.02)])
    job_id = submit(c, V1[4], R20)
    sent = upstream_job(em)
    assert sent["program_id"] == "estimator" and [p[1] for p in sent["params"]["pubs"]] == [
        {"ZZ": 1.0, "XX": 0.5}, {"ZI": 1.0}]  # fmt: skip
    doc = c.get(f"/runtime/jobs/{job_id}/results", headers=R20).json()
    assert doc["values"] == [1.5, 0.25]
    assert [m["shots"] for m in doc["metadata"]] == [4000, 4000]
    assert doc["metadata"][1]["variance"] == pytest.approx(0.02**2 * 4000)


def test_v1_jobs_in_a_session_keep_the_session(c: httpx.Client, em: EmulatorHandle) -> None:
    sess = c.post("/runtime/sessions", json={"backend": "fake_manila", "instance": "ibm-q/open/main"}, headers=R20)
    assert sess.status_code == 200
    body = copy.deepcopy(V1[5]) | {"session_id": sess.json()["id"]}
    submit(c, body, R20)
    assert upstream_job(em)["session_id"] == sess.json()["id"]


def test_backend_run_job_answers_a_qiskit_result_and_the_provider_can_find_it(
    c: httpx.Client, em: EmulatorHandle
) -> None:
    em.state.config.results["sampler"] = sampler_result([[("c", [0, 3] * 50, 2)]])
    body = copy.deepcopy(RUNNER)
    body["params"]["memory"] = True
    job_id = submit(c, body, PROVIDER)
    assert upstream_job(em)["program_id"] == "sampler"
    assert c.get(f"/runtime/facade/v1/jobs/{job_id}/type", headers=PROVIDER).json() == {"type": "RUNTIME"}
    job = c.get(f"/runtime/jobs/{job_id}", headers=PROVIDER).json()
    assert job["program"]["id"] == "circuit-runner" and job["tags"] == []
    res = c.get(f"/runtime/jobs/{job_id}/results", headers=PROVIDER).json()
    (exp,) = res["results"]
    assert exp["data"]["counts"] == {"0x0": 50, "0x3": 50} and sum(exp["data"]["counts"].values()) == 100
    assert exp["data"]["memory"][:2] == ["0x0", "0x3"]
    assert exp["header"]["creg_sizes"] == [["c", 2]] and exp["header"]["memory_slots"] == 2
    listed = c.get("/runtime/jobs", params={"limit": 5}, headers=PROVIDER).json()["jobs"]
    mine = [j for j in listed if j["id"] == job_id]
    assert mine and mine[0]["program"]["id"] == "circuit-runner"
    retrieved = c.get(f"/runtime/jobs/{job_id}", params={"exclude_params": "true"}, headers=PROVIDER).json()
    assert retrieved["program"]["id"] == "circuit-runner"


def test_a_restarted_proxy_still_rebuilds_the_answer(c: httpx.Client, em: EmulatorHandle) -> None:
    em.state.config.results["sampler"] = sampler_result([[("c", [3, 3, 0], 2)]])
    job_id = submit(c, RUNNER, PROVIDER)
    fresh = start_proxy(settings(em))  # no memory of the job
    try:
        typ = httpx.get(f"{fresh.url}/runtime/facade/v1/jobs/{job_id}/type", headers=PROVIDER, timeout=10)
        assert typ.json() == {"type": "RUNTIME"}
        res = httpx.get(f"{fresh.url}/runtime/jobs/{job_id}/results", headers=PROVIDER, timeout=10).json()
        assert res["results"][0]["data"]["counts"] == {"0x0": 1, "0x3": 2}
        assert res["results"][0]["header"]["name"] == "circuit-152"  # from the job's own pubs
    finally:
        fresh.server.stop()


def test_job_type_of_a_v2_job_stays_gone(c: httpx.Client, em: EmulatorHandle) -> None:
    circuit = V1[0]["params"]["circuits"][0]
    v2 = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [[circuit, None, 10]], "version": 2}}
    job_id = submit(c, v2, PROVIDER)
    r = c.get(f"/runtime/facade/v1/jobs/{job_id}/type", headers=PROVIDER)
    assert r.status_code == 410
    assert upstream_job(em)["params"] == v2["params"]  # V2 bodies pass untouched


def test_an_option_without_equivalent_is_a_400_and_nothing_is_sent(c: httpx.Client, em: EmulatorHandle) -> None:
    body = copy.deepcopy(V1[0])
    body["params"]["transpilation_settings"]["initial_layout"] = [0, 1]
    r = c.post("/runtime/jobs", content=json.dumps(body), headers=R20)
    assert r.status_code == 400
    assert "transpilation_settings.initial_layout" in r.json()["error"]["message"]
    assert em.api_requests() == []


def test_a_large_v1_body_is_translated_too(c: httpx.Client, em: EmulatorHandle) -> None:
    """Over the streaming threshold (1 MiB) the body is spooled; V1 ones are still read whole."""
    body = copy.deepcopy(V1[0])
    body["params"]["circuits"] = body["params"]["circuits"] * 6000
    body["params"]["parameter_values"] = [[]] * 6000
    assert len(json.dumps(body)) > 1024 * 1024
    submit(c, body, R20)
    sent = upstream_job(em)
    assert sent["params"]["version"] == 2 and len(sent["params"]["pubs"]) == 6000


def test_translation_is_counted_in_metrics_and_usage(em: EmulatorHandle, tmp_path: Any) -> None:
    from proxy.phaseout.usage import read_usage

    db = str(tmp_path / "usage.sqlite3")
    p = start_proxy(settings(em, usage_db=db))
    try:
        r = httpx.post(p.url + "/runtime/jobs", content=json.dumps(RUNNER), headers=PROVIDER, timeout=10)
        assert r.status_code == 200
        text = httpx.get(p.url + "/metrics", timeout=10).text
        assert 'action="translate_program"' in text
    finally:
        p.server.stop()
    rows = [r for r in read_usage(db) if r.endpoint.endswith("[translate_program]")]
    assert [(r.endpoint, r.count) for r in rows] == [("POST /jobs [translate_program]", 1)]


def test_a_route_policy_switches_the_translation_off(em: EmulatorHandle) -> None:
    p = start_proxy(settings(em, routes={"POST /jobs": {"programs": "refuse"}}))
    try:
        em.clear()
        r = httpx.post(p.url + "/runtime/jobs", content=json.dumps(V1[0]), headers=R20, timeout=10)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "v1_primitive_retired"
        assert "1513" in r.json()["error"]["message"]
        assert em.api_requests() == []
    finally:
        p.server.stop()


def test_explain_shows_the_v2_body_of_a_v1_submission() -> None:
    import asyncio

    from proxy.commands.explain import explain_request
    from proxy.config import load_settings

    body = {k: v for k, v in RUNNER.items() if k not in ("hub", "group", "project")}
    data = json.dumps(body).encode()
    x = asyncio.run(explain_request(load_settings(None, usage_db=""), "POST", "/runtime/jobs", data))
    assert x["outcome"] == "translate_program"
    sent = x["upstream"]["body"]
    assert sent["program_id"] == "sampler" and sent["params"]["version"] == 2 and len(sent["params"]["pubs"]) == 1
    assert any("circuit-runner job: translated to the sampler" in n for n in x["notes"])


def test_fixture_result_shapes_match_the_sdk_fixture() -> None:
    """The helper writes results the way the real fixture is written (same keys, same nesting)."""
    real = json.loads((DATA / "sampler_v2_result.json").read_text())
    ours = json.loads(sampler_result([[("meas", [0, 3], 2)]]))
    pub_real = real["__value__"]["pub_results"][0]["__value__"]["data"]["__value__"]
    pub_ours = ours["__value__"]["pub_results"][0]["__value__"]["data"]["__value__"]
    assert set(pub_real) == set(pub_ours)
    assert set(pub_real["fields"]["meas"]["__value__"]) == set(pub_ours["fields"]["meas"]["__value__"])


def test_an_isa_failure_of_a_translated_job_names_the_transpile_extra(c: httpx.Client, em: EmulatorHandle) -> None:
    job_id = submit(c, V1[0], R20)
    reason = "The instruction h on qubits (0,) is not supported by the target. Error code 1517."
    em.state.set_job_status(job_id, "Failed", reason=reason, reason_code=1517)
    state = c.get(f"/runtime/jobs/{job_id}", headers=R20).json()["state"]
    assert state["reason"].startswith(reason)
    assert "qiskit-classic-proxy[transpile]" in state["reason"] and "sampler job was translated" in state["reason"]


def test_other_failures_are_left_as_they_are(c: httpx.Client, em: EmulatorHandle) -> None:
    job_id = submit(c, V1[0], R20)
    em.state.set_job_status(job_id, "Failed", reason="Out of memory", reason_code=1305)
    assert c.get(f"/runtime/jobs/{job_id}", headers=R20).json()["state"]["reason"] == "Out of memory"


def test_results_of_a_v2_job_cost_one_cheap_lookup_once(c: httpx.Client, em: EmulatorHandle) -> None:
    circuit = V1[0]["params"]["circuits"][0]
    v2 = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [[circuit, None, 10]], "version": 2}}
    job_id = submit(c, v2, R20)
    em.clear()
    for _ in range(2):
        assert c.get(f"/runtime/jobs/{job_id}/results", headers=R20).status_code == 200
    paths = [(r["path"], r["query"]) for r in em.api_requests()]
    lookups = [p for p in paths if p[0] == f"/api/v1/jobs/{job_id}"]
    assert len(lookups) == 1 and lookups[0][1].get("exclude_params") in (["true"], "true")


def test_results_of_a_failed_translated_job_pass_as_the_new_api_said(c: httpx.Client, em: EmulatorHandle) -> None:
    job_id = submit(c, RUNNER, PROVIDER)
    em.state.set_job_status(job_id, "Failed", reason="Out of memory", reason_code=1305)
    r = c.get(f"/runtime/jobs/{job_id}/results", headers=PROVIDER)
    assert r.status_code < 500 and "Out of memory" in r.text


def test_a_malformed_primitive_result_is_a_502_not_a_traceback(c: httpx.Client, em: EmulatorHandle) -> None:
    em.state.config.results["sampler"] = b'{"__type__": "PrimitiveResult", "__value__": {"pub_results": [{}]}}'
    job_id = submit(c, RUNNER, PROVIDER)
    r = c.get(f"/runtime/jobs/{job_id}/results", headers=PROVIDER)
    assert r.status_code == 502 and r.json()["errors"][0]["code"] == "result_translation_failed"


def test_the_programs_policy_is_shown_and_checked() -> None:
    from proxy.classic.routes import RouteTable
    from proxy.config import ConfigError, load_settings
    from proxy.phaseout.policy import build_plans

    plans = build_plans(load_settings(None, usage_db="", routes={"POST /jobs": {"programs": "refuse"}}), RouteTable())
    assert plans["POST /jobs"].describe_policy() == "translate; V1 programs refused"
    assert plans["POST /jobs"].as_dict()["programs"] == "refuse"
    with pytest.raises(ConfigError, match="only job submissions"):
        build_plans(load_settings(None, usage_db="", routes={"GET /jobs": {"programs": "refuse"}}), RouteTable())
