"""Caller identity: IBM Cloud credentials with client tokens, and SDKs that send no version."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from ..conftest import Running

JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}
R40 = "qiskit-version-2/qiskit_ibm_runtime-0.40.1,qiskit-2.6.2*/qiskit"
#: What qiskit-ibm-runtime sends with USAGE_DATA_OPT_OUT=True: the version prefix empty.
OPTED_OUT = "/qiskit"
TOKEN = "client-token-for-tests"


def _pub(c: httpx.Client, job_id: str, app: str) -> dict:
    for _ in range(10):
        if c.get(f"/runtime/jobs/{job_id}").json()["state"]["status"] == "Completed":
            break
    doc = c.get(f"/runtime/jobs/{job_id}/results", headers={"x-qx-client-application": app}).json()
    return doc["__value__"]["pub_results"][0]


def test_regression_opted_out_runtime_gets_results_every_version_decodes(client: httpx.Client) -> None:
    """0.23.0 with USAGE_DATA_OPT_OUT sent no version and got today's encoding: KeyError 'field_types'."""
    job_id = client.post("/runtime/jobs", json=JOB).json()["id"]
    pub = _pub(client, job_id, OPTED_OUT)
    assert pub["__type__"] == "PubResult"
    assert pub["__value__"]["data"]["__value__"]["field_types"] == ["BitArray"]
    assert _pub(client, job_id, R40)["__type__"] == "SamplerPubResult"


def test_unknown_version_results_setting_keeps_todays_encoding(make_proxy: Callable[..., Running]) -> None:
    running = make_proxy(unknown_version_results="current")
    with httpx.Client(base_url=running.url, timeout=20, trust_env=False) as c:
        job_id = c.post("/runtime/jobs", json=JOB).json()["id"]
        assert _pub(c, job_id, OPTED_OUT)["__type__"] == "SamplerPubResult"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(f"apikey {TOKEN}", 200), (f"Bearer {TOKEN}", 200), ("apikey wrong-token-123", 401), (f"Basic {TOKEN}", 401)],
)
def test_ibm_cloud_authorization_schemes_with_client_tokens(
    make_proxy: Callable[..., Running], authorization: str, status: int
) -> None:
    running = make_proxy(client_tokens=[TOKEN])
    with httpx.Client(base_url=running.url, timeout=20, trust_env=False) as c:
        assert c.get("/backends", headers={"authorization": authorization}).status_code == status
