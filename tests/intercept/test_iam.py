"""The stand-in IAM inside the tunnel: an IBM Cloud caller trades a client token for a proxy bearer,
its key never reaches IAM or the new API, and the bearer is accepted like X-Access-Token."""

from __future__ import annotations

import base64
import io
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from ..conftest import EmulatorHandle, Running

CLIENT = "cloud-caller-token-0123"
GRANT = "urn:ibm:params:oauth:grant-type:apikey"
IAM = "https://iam.cloud.ibm.com/identity/token"
CLOUD = "https://us-east.quantum-computing.cloud.ibm.com"


@pytest.fixture
def cloud_client(make_proxy: Callable[..., Running], tmp_path: Path) -> httpx.Client:
    running = make_proxy(intercept_port=0, ca_dir=str(tmp_path), client_tokens=[f"team={CLIENT}"])
    assert running.app.intercept is not None
    ctx = ssl.create_default_context(cafile=str(running.app.intercept.ca.cert_path))
    return httpx.Client(proxy=f"http://127.0.0.1:{running.app.intercept.port}", verify=ctx, trust_env=False, timeout=20)


def _claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_client_token_is_exchanged_for_a_bearer_the_proxy_accepts(
    cloud_client: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.clear()
    with cloud_client as c:
        r = c.post(IAM, data={"grant_type": GRANT, "apikey": CLIENT})
        assert r.status_code == 200, r.text
        doc = r.json()
        claims = _claims(doc["access_token"])  # the SDKs decode exp/iat from the JWT, unverified
        assert claims["sub"] == "team" and claims["exp"] - claims["iat"] == doc["expires_in"]
        bearer = doc["access_token"]
        r = c.get(f"{CLOUD}/backends", headers={"authorization": f"Bearer {bearer}", "service-crn": DEMO_CRN})
        assert r.status_code == 200, r.text
    sent = json.dumps(emulator.api_requests())
    assert emulator.api_requests() and CLIENT not in sent and bearer not in sent


def test_an_unknown_key_gets_iams_own_error_shape(cloud_client: httpx.Client) -> None:
    with cloud_client as c:
        r = c.post(IAM, data={"grant_type": GRANT, "apikey": "someone-elses-ibm-key"})
        assert r.status_code == 400
        assert r.json()["errorCode"] == "BXNIM0415E"
        assert "someone-elses-ibm-key" not in r.text
        r = c.post(IAM, data={"grant_type": "password", "username": "x"})
        assert r.status_code == 400 and r.json()["errorCode"] == "BXNIM0109E"
        assert c.get("https://iam.cloud.ibm.com/identity/keys").status_code == 404


def test_apikey_authorization_with_a_client_token_is_admitted(cloud_client: httpx.Client) -> None:
    """runtime 0.23/0.30 send `Authorization: apikey <token>` when they cannot reach IAM."""
    with cloud_client as c:
        ok = c.get(f"{CLOUD}/backends", headers={"authorization": f"apikey {CLIENT}", "service-crn": DEMO_CRN})
        bad = c.get(f"{CLOUD}/backends", headers={"authorization": "apikey not-a-client-token"})
        none = c.get(f"{CLOUD}/backends")
    assert ok.status_code == 200, ok.text
    assert bad.status_code == 401 and none.status_code == 401
    assert none.json()["errors"][0]["code"] == "client_token_required"


def test_regression_a_tampered_bearer_is_refused(cloud_client: httpx.Client) -> None:
    with cloud_client as c:
        bearer = c.post(IAM, data={"grant_type": GRANT, "apikey": CLIENT}).json()["access_token"]
        head, _body, sig = bearer.split(".")
        claims = _claims(bearer)
        claims["sub"] = "admin"
        forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        r = c.get(f"{CLOUD}/backends", headers={"authorization": f"Bearer {head}.{forged_body}.{sig}"})
    assert r.status_code == 401


def test_client_token_and_bearer_never_reach_the_logs(cloud_client: httpx.Client, captured_logs: io.StringIO) -> None:
    with cloud_client as c:
        bearer = c.post(IAM, data={"grant_type": GRANT, "apikey": CLIENT}).json()["access_token"]
        c.get(f"{CLOUD}/backends", headers={"authorization": f"Bearer {bearer}"})
        c.post(IAM, data={"grant_type": GRANT, "apikey": "wrong-key-in-logs?"})
    text = captured_logs.getvalue()
    assert "GET" in text or "intercept" in text, "nothing was logged: the check would be empty"
    for secret in (CLIENT, bearer, "wrong-key-in-logs?"):
        assert secret not in text


def test_resource_search_lists_the_configured_instances_by_hub_group_project(
    make_proxy: Callable[..., Running], tmp_path: Path
) -> None:
    """SDKs given no instance (or a name) search IBM Cloud for them: the proxy answers with its own."""
    running = make_proxy(intercept_port=0, ca_dir=str(tmp_path), client_tokens=[f"team={CLIENT}"],
                         instances={"ibm-q-fake/research/proj1": SECOND_CRN})
    assert running.app.intercept is not None
    ctx = ssl.create_default_context(cafile=str(running.app.intercept.ca.cert_path))
    search = "https://api.global-search-tagging.cloud.ibm.com/v3/resources/search?limit=100"
    with httpx.Client(proxy=f"http://127.0.0.1:{running.app.intercept.port}", verify=ctx, trust_env=False,
                      timeout=20) as c:
        assert c.post(search, json={"query": "service_name:quantum-computing"}).status_code == 401
        bearer = c.post(IAM, data={"grant_type": GRANT, "apikey": CLIENT}).json()["access_token"]
        auth = {"authorization": f"Bearer {bearer}"}
        items = c.post(search, json={"query": "service_name:quantum-computing"}, headers=auth).json()["items"]
        plan = c.get(f"https://globalcatalog.cloud.ibm.com/api/v1/{items[0]['service_plan_unique_id']}", headers=auth)
    assert [(i["name"], i["crn"]) for i in items] == [("ibm-q/open/main", DEMO_CRN), ("ibm-q-fake/research/proj1",
                                                                                       SECOND_CRN)]
    assert all(i["doc"]["extensions"] for i in items)  # the SDK skips instances without allocations
    assert plan.status_code == 200 and plan.json()["overview_ui"]["en"]["display_name"]
