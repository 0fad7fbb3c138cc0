"""A caller's own Service-CRN (IBM Cloud callers) is honoured when configured, refused otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from .conftest import EmulatorHandle, Running, proxy_settings, start_proxy

RESEARCH = "ibm-q-fake/research/proj1"
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}
UNKNOWN = "crn:v1:bluemix:public:quantum-computing:us-east:a/1111:22222222-3333-4444-5555-666666666666::"


@pytest.fixture(scope="module")
def multi(emulator: EmulatorHandle) -> Iterator[Running]:
    running = start_proxy(proxy_settings(emulator.url, instances={RESEARCH: SECOND_CRN}))
    yield running
    running.server.stop()


@pytest.fixture
def mc(multi: Running, emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    emulator.clear()
    with httpx.Client(base_url=multi.url, timeout=20, trust_env=False) as c:
        yield c


@pytest.mark.parametrize("crn", [SECOND_CRN, DEMO_CRN])
def test_caller_service_crn_selects_that_instance(mc: httpx.Client, emulator: EmulatorHandle, crn: str) -> None:
    r = mc.post("/jobs", json=JOB, headers={"service-crn": crn})
    assert r.status_code in (200, 201), r.text
    job_id = r.json()["id"]
    assert emulator.api_requests()[-1]["headers"]["service-crn"] == crn
    mc.get(f"/jobs/{job_id}", headers={"service-crn": crn})
    assert emulator.api_requests()[-1]["headers"]["service-crn"] == crn


def test_regression_unknown_caller_crn_is_403_never_the_default(mc: httpx.Client, emulator: EmulatorHandle) -> None:
    """Once a caller's CRN was silently replaced by the configured one; now it is refused by name."""
    r = mc.post("/jobs", json=JOB, headers={"service-crn": UNKNOWN})
    assert r.status_code == 403
    err = r.json()["errors"][0]
    assert err["code"] == "unknown_instance_crn" and UNKNOWN in err["message"]
    assert mc.get("/backends", headers={"service-crn": UNKNOWN}).status_code == 403
    assert emulator.api_requests() == []
