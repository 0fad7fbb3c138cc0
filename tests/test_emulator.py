"""The emulator of the new Qiskit Runtime API and of IAM, exercised over real HTTP on loopback.

The proxy's own tests trust this fake to answer like the real service and to catch what the
real service would refuse, so its behaviour is pinned here: IAM, auth, instance isolation,
legacy-leak detection, the job/session state machines, recording and every fault mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.emulator import (
    DEMO_API_KEY,
    DEMO_CRN,
    SECOND_CRN,
    Emulator,
    EmulatorConfig,
    FaultConfigError,
    create_emulator_app,
    decode_jwt,
    make_jwt,
)
from proxy.serving import BackgroundServer, free_port

GRANT = "urn:ibm:params:oauth:grant-type:apikey"
DATA = Path(__file__).resolve().parents[1] / "proxy" / "emulator" / "data"
SAMPLER_BODY = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [], "version": 2}}


# ---------------------------------------------------------------------------- fixtures
class Env:
    """One running emulator plus a client and valid headers for it."""

    def __init__(self, server: BackgroundServer, em: Emulator) -> None:
        self.server = server
        self.em = em
        self.http = httpx.Client(base_url=server.url, timeout=5, trust_env=False)

    def token(self, api_key: str = DEMO_API_KEY) -> str:
        r = self.http.post("/identity/token", data={"grant_type": GRANT, "apikey": api_key})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def headers(self, crn: str = DEMO_CRN, version: str = "2026-04-15", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Service-CRN": crn, "IBM-API-Version": version, **extra}

    def create_job(self, headers: dict[str, str], **body: Any) -> str:
        r = self.http.post("/api/v1/jobs", headers=headers, json={**SAMPLER_BODY, **body})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])


@pytest.fixture(scope="module")
def running() -> Iterator[Env]:
    app = create_emulator_app()
    server = BackgroundServer(app).start()
    env = Env(server, app.state.emulator)
    yield env
    env.http.close()
    server.stop()


@pytest.fixture
def env(running: Env) -> Env:
    running.em.reset()
    running.em.config.require_api_version = True
    return running


@pytest.fixture
def h(env: Env) -> dict[str, str]:
    return env.headers()


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) >= {"errors", "trace", "status_code"}, body
    assert body["status_code"] == r.status_code
    err = body["errors"][0]
    assert err["more_info"] == "https://cloud.ibm.com/apidocs/quantum-computing#error-handling"
    return dict(err)


# ---------------------------------------------------------------------------- IAM
def test_iam_issues_a_jwt_with_iat_and_exp(env: Env) -> None:
    r = env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY})
    assert r.status_code == 200
    body = r.json()
    assert body["refresh_token"] == "not_supported"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "ibm openid"
    assert body["expires_in"] == 3600
    claims = decode_jwt(body["access_token"])
    assert claims["exp"] - claims["iat"] == 3600
    assert body["expiration"] == claims["exp"]
    assert len(body["access_token"].split(".")) == 3
    assert env.em.iam_calls == 1
    assert env.em.iam_requests[0]["form"]["apikey"] == [DEMO_API_KEY]
    assert env.em.requests == []  # IAM calls are not /api traffic


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"grant_type": GRANT, "apikey": "wrong-key"}, "BXNIM0415E"),
        ({"grant_type": GRANT}, "BXNIM0109E"),
        ({"apikey": DEMO_API_KEY}, "BXNIM0109E"),
        ({"grant_type": "password", "apikey": DEMO_API_KEY}, "BXNIM0103E"),
    ],
)
def test_iam_rejections(env: Env, form: dict[str, str], code: str) -> None:
    r = env.http.post("/identity/token", data=form)
    assert r.status_code == 400
    body = r.json()
    assert body["errorCode"] == code
    assert body["context"]["requestType"] == "incoming.Identity_Token"
    if code == "BXNIM0415E":
        assert body["errorMessage"] == "Provided API key could not be found."
    assert env.em.iam_calls == 1


def test_token_ttl_can_change_at_run_time(env: Env) -> None:
    env.em.set_faults(token_ttl=120)
    r = env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY})
    assert r.json()["expires_in"] == 120
    env.em.reset()
    assert env.em.config.token_ttl == 3600


def test_make_jwt_round_trips() -> None:
    token = make_jwt({"iat": 1, "exp": 2, "sub": "x"})
    assert decode_jwt(token) == {"iat": 1, "exp": 2, "sub": "x"}
    with pytest.raises(ValueError):
        decode_jwt("not-a-jwt")


# ---------------------------------------------------------------------------- auth, instance, version, leaks
def test_versions_needs_no_auth(env: Env) -> None:
    r = env.http.get("/api/v1/versions")
    assert r.status_code == 200
    versions = [v["version"] for v in r.json()["versions"]]
    assert "2026-04-15" in versions


@pytest.mark.parametrize(
    "authorization",
    [None, f"apikey {DEMO_API_KEY}", "Bearer not-a-token", "Bearer " + make_jwt({"iat": 1, "exp": 9999999999})],
)
def test_bad_or_missing_bearer_is_401(env: Env, authorization: str | None) -> None:
    headers = {"Service-CRN": DEMO_CRN, "IBM-API-Version": "2026-04-15"}
    if authorization:
        headers["Authorization"] = authorization
    r = env.http.get("/api/v1/backends", headers=headers)
    assert r.status_code == 401
    err = error_of(r)
    assert err["code"] == 1200
    assert "not authorized" in err["message"]


def test_expired_token_is_401(env: Env) -> None:
    env.em.set_faults(token_ttl=1)
    headers = env.headers()
    assert env.http.get("/api/v1/backends", headers=headers).status_code == 200
    time.sleep(1.05)
    r = env.http.get("/api/v1/backends", headers=headers)
    assert r.status_code == 401
    assert "expired" in error_of(r)["message"]


def test_revoked_token_is_401(env: Env, h: dict[str, str]) -> None:
    env.em.revoke_tokens()
    assert env.http.get("/api/v1/backends", headers=h).status_code == 401


def test_service_crn_missing_is_400_and_unknown_is_404(env: Env, h: dict[str, str]) -> None:
    missing = {k: v for k, v in h.items() if k != "Service-CRN"}
    assert env.http.get("/api/v1/backends", headers=missing).status_code == 400
    r = env.http.get("/api/v1/backends", headers={**h, "Service-CRN": DEMO_CRN.replace("d3m0", "ffff")})
    assert r.status_code == 404
    err = error_of(r)
    assert (err["code"], err["message"]) == (1279, "Instance not found")


@pytest.mark.parametrize("version", [None, "2026-4-15", "latest", "2026-02-30", "2023-01-01"])
def test_api_version_is_required_and_must_be_a_date(env: Env, h: dict[str, str], version: str | None) -> None:
    headers = {k: v for k, v in h.items() if k != "IBM-API-Version"}
    if version is not None:
        headers["IBM-API-Version"] = version
    r = env.http.get("/api/v1/backends", headers=headers)
    assert r.status_code == 400
    assert "IBM-API-Version" in error_of(r)["message"]


def test_api_version_can_be_optional(env: Env, h: dict[str, str]) -> None:
    env.em.config.require_api_version = False
    headers = {k: v for k, v in h.items() if k != "IBM-API-Version"}
    r = env.http.get("/api/v1/backends", headers=headers)
    assert r.status_code == 200
    assert r.json() == {"devices": ["fake_manila", "fake_kyiv"]}  # omitted version: the oldest shape


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "named"),
    [
        ("GET", "/api/v1/backends", {"params": {"provider": "ibm-q/open/main"}}, "provider"),
        ("GET", "/api/v1/jobs", {"params": {"provider": "ibm-q/open/main"}}, "provider"),
        ("POST", "/api/v1/jobs", {"json": {**SAMPLER_BODY, "hub": "ibm-q"}}, "hub"),
        ("POST", "/api/v1/jobs", {"json": {**SAMPLER_BODY, "group": "open"}}, "group"),
        ("POST", "/api/v1/jobs", {"json": {**SAMPLER_BODY, "project": "main"}}, "project"),
        (
            "POST",
            "/api/v1/sessions",
            {"json": {"mode": "dedicated", "backend": "fake_manila", "max_session_ttl": 60}},
            "max_session_ttl",
        ),
        ("GET", "/api/v1/backends", {"headers": {"X-Access-Token": "classic"}}, "X-Access-Token"),
    ],
)
def test_legacy_fields_are_rejected_naming_the_field(
    env: Env, h: dict[str, str], method: str, path: str, kwargs: dict[str, Any], named: str
) -> None:
    kwargs = dict(kwargs)
    kwargs["headers"] = {**h, **kwargs.get("headers", {})}
    r = env.http.request(method, path, **kwargs)
    assert r.status_code == 400
    assert named in error_of(r)["message"]
    assert len(env.em.requests) == 1  # still recorded, so leak tests can inspect it
    assert env.em.state()["jobs"][DEMO_CRN] == 0


def test_malformed_json_and_wrong_content_type(env: Env, h: dict[str, str]) -> None:
    r = env.http.post("/api/v1/jobs", headers={**h, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 400
    assert "Malformed JSON" in error_of(r)["message"]
    r = env.http.post("/api/v1/jobs", headers=h, content=json.dumps(SAMPLER_BODY).encode())
    assert r.status_code == 415
    assert env.em.requests[-1]["body"] == SAMPLER_BODY  # parsed for the record anyway


def test_unknown_path_404_and_wrong_method_405(env: Env, h: dict[str, str]) -> None:
    assert env.http.get("/api/v1/nothing", headers=h).status_code == 404
    r = env.http.put("/api/v1/jobs", headers=h, json={})
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]


# ---------------------------------------------------------------------------- jobs
def test_job_lifecycle(env: Env, h: dict[str, str]) -> None:
    jid = env.create_job(h, tags=["first"])
    listed = env.http.get("/api/v1/jobs", headers=h).json()["jobs"]
    assert [(j["id"], j["status"]) for j in listed] == [(jid, "Queued")]  # listing does not advance

    seen = []
    for _ in range(3):
        job = env.http.get(f"/api/v1/jobs/{jid}", headers=h, params={"exclude_params": "true"}).json()
        seen.append(job["state"]["status"])
        assert "params" not in job
    assert seen == ["Running", "Completed", "Completed"]
    assert job["program"] == {"id": "sampler"}
    assert job["usage"] == {"qpu_charge_time_seconds": 2.0, "status": "complete"}
    assert job["created"].endswith("Z")
    assert env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()["params"] == SAMPLER_BODY["params"]

    r = env.http.get(f"/api/v1/jobs/{jid}/results", headers=h)
    assert r.status_code == 200
    assert r.content == (DATA / "sampler_v2_result.json").read_bytes()

    metrics = env.http.get(f"/api/v1/jobs/{jid}/metrics", headers=h).json()
    assert set(metrics["timestamps"]) == {"created", "running", "finished"}
    assert metrics["usage"] == {"qpu_charge_time_seconds": 2.0, "status": "complete"}
    assert "circuits_execution_time_ns" in metrics and "bss" not in metrics

    r = env.http.get(f"/api/v1/jobs/{jid}/logs", headers=h)
    assert r.headers["content-type"].startswith("text/plain")
    assert "Completed" in r.text

    r = env.http.put(f"/api/v1/jobs/{jid}/tags", headers=h, json={"tags": ["a", "b"]})
    assert r.status_code == 204
    assert env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()["tags"] == ["a", "b"]
    r = env.http.put(f"/api/v1/jobs/{jid}/tags", headers=h, json={"tags": [f"t{i}" for i in range(9)]})
    assert r.status_code == 400

    r = env.http.post(f"/api/v1/jobs/{jid}/cancel", headers=h)
    assert r.status_code == 409
    assert error_of(r)["code"] == 1293

    assert env.http.delete(f"/api/v1/jobs/{jid}", headers=h).status_code == 204
    r = env.http.get(f"/api/v1/jobs/{jid}", headers=h)
    assert r.status_code == 404
    assert error_of(r)["code"] == 1291
    assert error_of(r)["message"] == f"Job not found. Job ID: {jid}"


def test_pending_job_cancels_and_cannot_be_deleted(env: Env, h: dict[str, str]) -> None:
    jid = env.create_job(h)
    assert env.http.delete(f"/api/v1/jobs/{jid}", headers=h).status_code == 409
    assert env.http.get(f"/api/v1/jobs/{jid}/results", headers=h).status_code == 204
    assert env.http.post(f"/api/v1/jobs/{jid}/cancel", headers=h).status_code == 204
    job = env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()
    assert job["status"] == "Cancelled"
    assert env.http.delete(f"/api/v1/jobs/{jid}", headers=h).status_code == 204


def test_failure_outcomes_are_deterministic(env: Env, h: dict[str, str]) -> None:
    failing = env.create_job(h, tags=["emulator:fail"])
    too_long = env.create_job(h, tags=["emulator:timeout"])
    for _ in range(2):
        env.http.get(f"/api/v1/jobs/{failing}", headers=h)
        last = env.http.get(f"/api/v1/jobs/{too_long}", headers=h).json()
    failed = env.http.get(f"/api/v1/jobs/{failing}", headers=h).json()
    assert failed["status"] == "Failed" and failed["state"]["reason"]
    assert last["status"] == "Cancelled - Ran too long"
    assert last["state"] == {"status": "Cancelled", "reason": "Ran too long", "reason_code": 1305}
    r = env.http.get(f"/api/v1/jobs/{failing}/results", headers=h)
    assert r.status_code == 200 and "failure" in r.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"backend": "fake_manila"}, 400, "invalid_parameter"),
        ({"program_id": "sampler"}, 400, "invalid_parameter"),
        ({"program_id": "sampler", "backend": "ibm_nowhere"}, 404, "not_found"),
        ({"program_id": "circuit-runner", "backend": "fake_manila"}, 400, 1513),
        ({"program_id": "qasm3-runner", "backend": "fake_manila"}, 400, 1513),
        ({"program_id": "sampler", "backend": "fake_manila", "params": {"circuits": []}}, 400, 1513),
        ({"program_id": "estimator", "backend": "fake_manila", "params": {"version": 1}}, 400, 1513),
        ({"program_id": "no-such-program", "backend": "fake_manila"}, 404, "not_found"),
        ({**SAMPLER_BODY, "cost": 10801}, 400, "invalid_parameter"),
        ({**SAMPLER_BODY, "log_level": "loud"}, 400, "invalid_parameter"),
        ({**SAMPLER_BODY, "session_id": "s-unknown"}, 404, "not_found"),
        ({**SAMPLER_BODY, "start_session": True}, 400, "invalid_parameter"),
    ],
)
def test_job_create_validation(env: Env, h: dict[str, str], body: dict[str, Any], status: int, code: str | int) -> None:
    r = env.http.post("/api/v1/jobs", headers=h, json=body)
    assert r.status_code == status, r.text
    assert error_of(r)["code"] == code


def test_job_create_accepts_what_0_51_sends(env: Env, h: dict[str, str]) -> None:
    body = {**SAMPLER_BODY, "log_level": "WARNING", "cost": 600, "tags": ["x"], "private": True}
    r = env.http.post("/api/v1/jobs", headers=h, json=body)
    assert r.status_code == 200
    assert r.json()["private"] is True and r.json()["backend"] == "fake_manila"


def test_job_list_paging_and_filters(env: Env, h: dict[str, str]) -> None:
    ids = [env.create_job(h, tags=["even" if i % 2 == 0 else "odd"]) for i in range(5)]
    page = env.http.get("/api/v1/jobs", headers=h, params={"limit": 2}).json()
    assert (page["count"], page["offset"], page["limit"]) == (5, 0, 2)
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
    tail = env.http.get("/api/v1/jobs", headers=h, params={"limit": 2, "offset": 4}).json()
    assert [j["id"] for j in tail["jobs"]] == [ids[0]]
    asc = env.http.get("/api/v1/jobs", headers=h, params={"sort": "ASC", "limit": 5}).json()
    assert [j["id"] for j in asc["jobs"]] == ids
    even = env.http.get("/api/v1/jobs", headers=h, params={"tags": "even"}).json()
    assert even["count"] == 3
    env.http.post(f"/api/v1/jobs/{ids[0]}/cancel", headers=h)
    pending = env.http.get("/api/v1/jobs", headers=h, params={"pending": "true"}).json()
    assert pending["count"] == 4
    excluded = env.http.get("/api/v1/jobs", headers=h, params={"exclude_params": "true"}).json()
    assert all("params" not in j for j in excluded["jobs"])
    future = env.http.get("/api/v1/jobs", headers=h, params={"created_after": "2999-01-01T00:00:00Z"}).json()
    assert future["count"] == 0
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"exclude_params": "False"}, {"sort": "up"}):
        assert env.http.get("/api/v1/jobs", headers=h, params=bad).status_code == 400, bad


def test_state_is_per_instance(env: Env, h: dict[str, str]) -> None:
    other = env.headers(crn=SECOND_CRN)
    jid = env.create_job(h)
    sid = env.http.post("/api/v1/sessions", headers=h, json={"mode": "batch", "backend": "fake_manila"}).json()["id"]
    assert env.http.get(f"/api/v1/jobs/{jid}", headers=other).status_code == 404
    assert env.http.delete(f"/api/v1/jobs/{jid}", headers=other).status_code == 404
    assert env.http.get(f"/api/v1/sessions/{sid}", headers=other).status_code == 404
    assert env.http.get("/api/v1/jobs", headers=other).json()["count"] == 0
    mine = env.create_job(other)
    assert env.http.get(f"/api/v1/jobs/{mine}", headers=h).status_code == 404
    assert env.em.state()["jobs"] == {DEMO_CRN: 1, SECOND_CRN: 1}


def test_concurrent_job_creation(env: Env, h: dict[str, str]) -> None:
    ids: list[str] = []

    def submit() -> None:
        with httpx.Client(base_url=env.server.url, timeout=5, trust_env=False) as c:
            for _ in range(5):
                ids.append(c.post("/api/v1/jobs", headers=h, json=SAMPLER_BODY).json()["id"])

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(ids)) == 20
    assert env.em.state()["jobs"][DEMO_CRN] == 20


# ---------------------------------------------------------------------------- sessions
def test_session_lifecycle(env: Env, h: dict[str, str]) -> None:
    r = env.http.post(
        "/api/v1/sessions",
        headers=h,
        json={"mode": "dedicated", "backend": "fake_manila", "max_ttl": 600, "instance": DEMO_CRN},
    )
    assert r.status_code == 200, r.text
    sess = r.json()
    assert (sess["backend_name"], sess["mode"], sess["max_ttl"], sess["state"]) == (
        "fake_manila",
        "dedicated",
        600,
        "open",
    )
    assert sess["accepting_jobs"] is True
    sid = sess["id"]

    jid = env.create_job(h, session_id=sid)
    env.http.get(f"/api/v1/jobs/{jid}", headers=h)  # Running
    sess = env.http.get(f"/api/v1/sessions/{sid}", headers=h).json()
    assert sess["state"] == "active" and sess["started_at"] and sess["last_job_started"]

    assert env.http.patch(f"/api/v1/sessions/{sid}", headers=h, json={"accepting_jobs": False}).status_code == 204
    r = env.http.post("/api/v1/jobs", headers=h, json={**SAMPLER_BODY, "session_id": sid})
    assert r.status_code == 409
    env.http.get(f"/api/v1/jobs/{jid}", headers=h)  # Completed: the last job ends the session
    sess = env.http.get(f"/api/v1/sessions/{sid}", headers=h).json()
    assert (sess["state"], sess["accepting_jobs"]) == ("closed", False)
    assert sess["closed_at"]


def test_session_close_cancels_its_pending_jobs(env: Env, h: dict[str, str]) -> None:
    sid = env.http.post("/api/v1/sessions", headers=h, json={"mode": "batch", "backend": "fake_manila"}).json()["id"]
    jid = env.create_job(h, session_id=sid)
    assert env.http.delete(f"/api/v1/sessions/{sid}/close", headers=h).status_code == 204
    assert env.http.get(f"/api/v1/sessions/{sid}", headers=h).json()["state"] == "closed"
    assert env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()["status"] == "Cancelled"
    assert env.http.get("/api/v1/sessions/nope", headers=h).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"backend": "fake_manila"},  # no mode (runtime 0.23 habit)
        {"mode": "dedicated"},
        {"mode": "dedicated", "backend": "fake_manila", "instance": "ibm-q/open/main"},
        {"mode": "dedicated", "backend": "fake_manila", "max_ttl": "1h"},
    ],
)
def test_session_create_validation(env: Env, h: dict[str, str], body: dict[str, Any]) -> None:
    assert env.http.post("/api/v1/sessions", headers=h, json=body).status_code == 400


def test_session_patch_requires_boolean(env: Env, h: dict[str, str]) -> None:
    sid = env.http.post("/api/v1/sessions", headers=h, json={"mode": "batch", "backend": "fake_manila"}).json()["id"]
    assert env.http.patch(f"/api/v1/sessions/{sid}", headers=h, json={"accepting_jobs": "no"}).status_code == 400


# ---------------------------------------------------------------------------- backends and the rest
def test_backends(env: Env, h: dict[str, str]) -> None:
    devices = env.http.get("/api/v1/backends", headers=h, params={"include_mocks": "True"}).json()["devices"]
    assert [d["name"] for d in devices] == ["fake_manila", "fake_kyiv"]
    assert devices[0]["status"] == {"name": "online", "reason": "available"}
    assert devices[0]["qubits"] == 5 and devices[0]["queue_length"] == 0
    conf = env.http.get("/api/v1/backends/fake_manila/configuration", headers=h).json()
    assert conf["backend_name"] == "fake_manila" and conf["n_qubits"] == 5
    assert env.http.get("/api/v1/backends/fake_kyiv/configuration", headers=h).json()["backend_name"] == "fake_kyiv"
    props = env.http.get("/api/v1/backends/fake_manila/properties", headers=h)
    assert props.status_code == 200 and props.json()["qubits"]
    assert env.http.get("/api/v1/backends/fake_manila/defaults", headers=h).json()["qubit_freq_est"]
    jid = env.create_job(h)
    status = env.http.get("/api/v1/backends/fake_manila/status", headers=h).json()
    assert status == {"state": True, "status": "active", "message": "", "length_queue": 1, "backend_version": "1.2.6"}
    env.http.post(f"/api/v1/jobs/{jid}/cancel", headers=h)
    assert env.http.get("/api/v1/backends/fake_manila/status", headers=h).json()["length_queue"] == 0
    r = env.http.get("/api/v1/backends/ibm_nowhere/status", headers=h)
    assert r.status_code == 404
    assert (error_of(r)["code"], error_of(r)["message"]) == ("not_found", "device not found")


def test_version_gated_shapes(env: Env, h: dict[str, str]) -> None:
    old = {**h, "IBM-API-Version": "2025-05-01"}
    jid = env.create_job(h)
    env.http.get(f"/api/v1/jobs/{jid}", headers=h)
    metrics = env.http.get(f"/api/v1/jobs/{jid}/metrics", headers=old).json()
    assert "bss" in metrics and set(metrics["usage"]) == {"quantum_seconds", "seconds"}
    assert env.http.get(f"/api/v1/jobs/{jid}/transpiled_circuits", headers=h).status_code == 404  # gone 2026-02-01
    assert "url" in env.http.get(f"/api/v1/jobs/{jid}/transpiled_circuits", headers=old).json()
    assert env.http.get(f"/api/v1/jobs/{jid}/interim_results", headers=h).status_code == 200


def test_instance_account_workload_tag_and_analytics_endpoints(env: Env, h: dict[str, str]) -> None:
    jid = env.create_job(h, tags=["alpha-tag"])
    for _ in range(2):
        env.http.get(f"/api/v1/jobs/{jid}", headers=h)
    get = env.http.get
    assert get("/api/v1/instance", headers=h).json() == {"qctrl_enabled": False}
    usage = get("/api/v1/instances/usage", headers=h).json()
    assert usage["instance_id"] == DEMO_CRN and usage["usage_consumed_seconds"] == 2.0
    assert usage["usage_limit_reached"] is False
    assert env.http.put("/api/v1/instances/configuration", headers=h, json={"instance_limit": 1}).status_code == 204
    assert get("/api/v1/instances/configuration", headers=h).json() == {"instance_limit": 1}
    assert env.http.post("/api/v1/jobs", headers=h, json=SAMPLER_BODY).status_code == 409  # over the limit
    assert env.http.put("/api/v1/instances/configuration", headers=h, json={"instance_limit": "x"}).status_code == 400
    assert get("/api/v1/accounts/0000000000000000000000000000demo", headers=h).json()["plans"][0]["backends"]
    workloads = get("/api/v1/workloads", headers=h, params={"limit": 5}).json()
    assert workloads["total_count"] == 1 and workloads["workloads"][0]["status"] == "completed"
    assert get("/api/v1/tags", headers=h, params={"type": "job", "search": "alpha"}).json() == {"tags": ["alpha-tag"]}
    assert get("/api/v1/tags", headers=h, params={"search": "alpha"}).status_code == 400
    assert get("/api/v1/tags", headers=h, params={"type": "job", "search": "al"}).status_code == 400
    assert env.http.post("/api/v1/logout", headers=h).status_code == 204
    assert get("/api/v1/analytics/filters", headers=h).json()["plans"]
    assert get("/api/v1/analytics/usage", headers=h).json()["jobs"] == 1.0
    for path in ("usage_grouped", "usage-grouped", "usage_grouped_by_date", "usage-grouped-by-date"):
        r = get(f"/api/v1/analytics/{path}", headers=h, params={"group_by": "backend"})
        assert r.status_code == 200, path
        assert r.json()["data"][0]["key"] == "fake_manila"
        assert get(f"/api/v1/analytics/{path}", headers=h).status_code == 400  # group_by is required


# ---------------------------------------------------------------------------- recording and admin
def test_requests_are_recorded_with_all_headers(env: Env, h: dict[str, str]) -> None:
    r = env.http.post(
        "/api/v1/jobs", headers={**h, "X-Request-ID": "trace-1"}, params={"a": ["1", "2"]}, json=SAMPLER_BODY
    )
    (rec,) = env.em.requests
    assert rec["method"] == "POST" and rec["path"] == "/api/v1/jobs" and rec["route"] == "/v1/jobs"
    assert rec["query"] == {"a": ["1", "2"]}
    assert rec["headers"]["authorization"] == h["Authorization"]
    assert rec["headers"]["service-crn"] == DEMO_CRN
    assert rec["body"] == SAMPLER_BODY
    assert rec["raw_body_len"] == len(r.request.content)
    assert rec["status"] == 200 and rec["trace"] == "trace-1"
    admin = env.http.get("/__emulator__/requests").json()
    assert admin[0]["path"] == "/api/v1/jobs"
    assert env.http.get("/__emulator__/state").json()["jobs"][DEMO_CRN] == 1
    assert env.http.delete("/__emulator__/requests").status_code == 204
    assert env.em.requests == []
    assert env.http.post("/__emulator__/reset").status_code == 204
    assert env.em.state()["jobs"][DEMO_CRN] == 0


def test_admin_can_force_a_job_status(env: Env, h: dict[str, str]) -> None:
    jid = env.create_job(h)
    r = env.http.post(
        f"/__emulator__/jobs/{jid}/status", json={"status": "Failed", "reason": "boom", "reason_code": 1517}
    )
    assert r.json() == {"id": jid, "status": "Failed"}
    job = env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()
    assert job["state"] == {"status": "Failed", "reason": "boom", "reason_code": 1517}


# ---------------------------------------------------------------------------- faults
def test_fault_status_once(env: Env, h: dict[str, str]) -> None:
    rule = env.em.add_fault("GET /v1/backends", "status", status=401, times=1)
    r = env.http.get("/api/v1/backends", headers=h)
    assert r.status_code == 401 and error_of(r)["code"] == 1200
    assert env.http.get("/api/v1/backends", headers=h).status_code == 200
    assert (rule.hits, rule.times) == (1, 0)
    assert [rec["fault"] for rec in env.em.requests] == ["status", None]


def test_fault_status_with_headers_matches_concrete_paths(env: Env, h: dict[str, str]) -> None:
    jid = env.create_job(h)
    env.em.add_fault(f"GET /v1/jobs/{jid}", "status", status=503, headers={"Retry-After": "1"}, times=2)
    r = env.http.get(f"/api/v1/jobs/{jid}", headers=h)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert error_of(r)["code"] == "service_unavailable"
    assert env.http.get("/api/v1/backends", headers=h).status_code == 200  # other paths untouched


def test_fault_hang_then_answers(env: Env, h: dict[str, str]) -> None:
    env.em.add_fault("GET /v1/backends", "hang", delay=0.3, times=1)
    t0 = time.monotonic()
    assert env.http.get("/api/v1/backends", headers=h).status_code == 200
    assert time.monotonic() - t0 >= 0.28  # asyncio timers may fire a hair early


def test_fault_hang_abandoned_by_client_is_not_processed(env: Env, h: dict[str, str]) -> None:
    env.em.add_fault("POST /v1/jobs", "hang", times=1)  # no delay: until the client gives up
    with pytest.raises(httpx.ReadTimeout):
        env.http.post("/api/v1/jobs", headers=h, json=SAMPLER_BODY, timeout=0.3)
    deadline = time.monotonic() + 3
    while env.em.requests[-1].get("outcome") != "client_disconnected" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.em.requests[-1]["outcome"] == "client_disconnected"
    assert env.em.state()["jobs"][DEMO_CRN] == 0


def test_fault_drop_processes_then_closes_without_response(env: Env, h: dict[str, str]) -> None:
    env.em.add_fault("POST /v1/jobs", "drop", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        env.http.post("/api/v1/jobs", headers=h, json=SAMPLER_BODY)
    assert env.em.state()["jobs"][DEMO_CRN] == 1  # the job WAS created
    rec = env.em.requests[-1]
    assert (rec["fault"], rec["outcome"], rec["body"]) == ("drop", "dropped", SAMPLER_BODY)
    assert env.http.get("/api/v1/jobs", headers=h).json()["count"] == 1  # next request is fine


@pytest.mark.parametrize("target", ["results", "cancel"])
def test_fault_truncate(env: Env, h: dict[str, str], target: str) -> None:
    jid = env.create_job(h)
    if target == "results":
        env.http.get(f"/api/v1/jobs/{jid}", headers=h)
        env.http.get(f"/api/v1/jobs/{jid}", headers=h)
        env.em.add_fault("GET /v1/jobs/{id}/results", "truncate", times=1)
        call = lambda: env.http.get(f"/api/v1/jobs/{jid}/results", headers=h)  # noqa: E731
    else:  # a 204 has no body: the header block itself is cut
        env.em.add_fault("POST /v1/jobs/*/cancel", "truncate", times=1)
        call = lambda: env.http.post(f"/api/v1/jobs/{jid}/cancel", headers=h)  # noqa: E731
    with pytest.raises(httpx.RemoteProtocolError):
        call()
    assert env.em.requests[-1]["outcome"] == "truncated"


def test_faults_over_the_admin_endpoint(env: Env, h: dict[str, str]) -> None:
    rules = [{"match": "*", "action": "status", "status": 500, "times": 1}]
    r = env.http.post("/__emulator__/faults", json={"rules": rules, "iam_mode": "down", "iam_times": 1})
    assert r.status_code == 200 and r.json()["rules"][0]["times"] == 1
    assert env.http.get("/api/v1/backends", headers=h).status_code == 500
    assert env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY}).status_code == 503
    assert env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY}).status_code == 200
    bad = env.http.post("/__emulator__/faults", json={"rules": [{"match": "*", "action": "explode"}]})
    assert bad.status_code == 400 and "action" in bad.json()["error"]
    assert env.http.post("/__emulator__/faults", json={"iam_mode": "sideways"}).status_code == 400
    with pytest.raises(FaultConfigError):
        env.em.set_faults(rules=[{"match": "GET"}])


@pytest.mark.parametrize(("mode", "status", "code"), [("down", 503, "BXNIM0003E"), ("reject", 400, "BXNIM0415E")])
def test_iam_fault_modes(env: Env, mode: str, status: int, code: str) -> None:
    env.em.set_faults(iam_mode=mode)
    r = env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY})
    assert r.status_code == status and r.json()["errorCode"] == code
    assert env.em.iam_calls == 1


def test_iam_slow_and_drop(env: Env) -> None:
    env.em.set_faults(iam_mode="slow", iam_delay=0.3, iam_times=1)
    t0 = time.monotonic()
    assert env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY}).status_code == 200
    assert time.monotonic() - t0 >= 0.28  # asyncio timers may fire a hair early
    env.em.set_faults(iam_mode="drop", iam_times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY})
    assert env.http.post("/identity/token", data={"grant_type": GRANT, "apikey": DEMO_API_KEY}).status_code == 200
    assert env.em.iam_calls == 3


# ---------------------------------------------------------------------------- standalone entry point
def test_module_entry_point_serves() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.emulator", "--port", str(port), "--token-ttl", "60", "--api-key", "k-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/identity/token", data={"grant_type": GRANT, "apikey": "k-1"}, timeout=2
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "emulator did not start"
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["expires_in"] == 60
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_config_knobs_on_a_second_emulator() -> None:
    config = EmulatorConfig(job_polls_to_complete=3, reject_unknown_fields=True, job_rate_limit_per_minute=2)
    app = create_emulator_app(config)
    server = BackgroundServer(app).start()
    env = Env(server, app.state.emulator)
    try:
        h = env.headers()
        jid = env.create_job(h)
        seen = [env.http.get(f"/api/v1/jobs/{jid}", headers=h).json()["status"] for _ in range(3)]
        assert seen == ["Queued", "Running", "Completed"]
        r = env.http.post("/api/v1/jobs", headers=h, json={**SAMPLER_BODY, "hgp": "x"})
        assert r.status_code == 400 and "hgp" in error_of(r)["message"]
        env.create_job(h)
        r = env.http.post("/api/v1/jobs", headers=h, json=SAMPLER_BODY)  # third within a minute
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
    finally:
        env.http.close()
        server.stop()


def test_default_config_is_independent_per_emulator() -> None:
    a, b = Emulator(EmulatorConfig()), Emulator()
    a.config.token_ttl = 5
    assert b.config.token_ttl == 3600
    assert [x.name for x in b.config.backends] == ["fake_manila", "fake_kyiv"]
