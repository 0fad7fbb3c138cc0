"""The job/session -> instance memory shared through PostgreSQL: the first try reaches the right CRN."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from .conftest import EmulatorHandle, Running
from .pgserver import PostgresServer

RESEARCH = "ibm-q-fake/research/proj1"
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}


def submit(p: Running) -> str:
    hub, group, project = RESEARCH.split("/")
    r = httpx.post(p.url + "/runtime/jobs", json={**JOB, "hub": hub, "group": group, "project": project}, timeout=20)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def crns_for(emulator: EmulatorHandle, job_id: str) -> list[str]:
    return [r["headers"].get("service-crn", "") for r in emulator.api_requests() if r["path"].endswith(job_id)]


@pytest.mark.parametrize("shared", [True, False], ids=["postgres", "per-process"])
def test_a_job_created_on_one_replica_is_found_first_try_on_the_other(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle, pg_url: str, shared: bool
) -> None:
    db = pg_url if shared else ""
    a = make_proxy(usage_db=db, instances={RESEARCH: SECOND_CRN})
    b = make_proxy(usage_db=db, instances={RESEARCH: SECOND_CRN})
    job = submit(a)
    emulator.clear()
    r = httpx.get(f"{b.url}/runtime/jobs/{job}", timeout=20)
    assert r.status_code == 200 and r.json()["hub"] == "ibm-q-fake"
    if shared:
        assert crns_for(emulator, job) == [SECOND_CRN]
    else:  # what the database saves: B probes the default instance first
        assert crns_for(emulator, job) == [DEMO_CRN, SECOND_CRN]


def test_the_memory_still_works_while_the_database_is_down(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle, postgres: PostgresServer, pg_url: str
) -> None:
    a = make_proxy(usage_db=pg_url, instances={RESEARCH: SECOND_CRN})
    postgres.stop()
    try:
        job = submit(a)  # answered although the database is away; the pair waits in memory
        emulator.clear()
        assert httpx.get(f"{a.url}/runtime/jobs/{job}", timeout=20).status_code == 200
        assert crns_for(emulator, job) == [SECOND_CRN]
    finally:
        postgres.start()
    b = make_proxy(usage_db=pg_url, instances={RESEARCH: SECOND_CRN})
    status, tries = 0, 0
    while tries < 100:  # a's sync round replays the queued pair once the database is back
        emulator.clear()
        status = httpx.get(f"{b.url}/runtime/jobs/{job}", timeout=20).status_code
        if crns_for(emulator, job) == [SECOND_CRN]:
            break
        b.app.pipeline.instances._of.pop(job, None)  # forget what probing taught b; ask the database again
        tries += 1
        time.sleep(0.1)
    assert status == 200 and crns_for(emulator, job) == [SECOND_CRN]
