"""Exactly-once job submissions through real servers: the emulator creates the job and drops the
answer (or answers 5xx); the caller must get exactly that job, and the emulator must hold one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from proxy.classic.answers import MARKER_PREFIX
from proxy.submissions import MAX_TAGS, Submissions, mark

from .conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy
from .test_failures import wait_for

JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}


@pytest.fixture
def stack() -> Iterator[Callable[..., tuple[EmulatorHandle, Running]]]:
    started: list[Any] = []

    def make(**overrides: Any) -> tuple[EmulatorHandle, Running]:
        emu = start_emulator()
        started.append(emu)
        proxy = start_proxy(proxy_settings(emu.url, **overrides))
        started.append(proxy)
        wait_for(lambda: proxy.app.tokens is not None and proxy.app.tokens.ready)
        return emu, proxy

    yield make
    for s in reversed(started):
        s.server.stop()


def created_jobs(emu: EmulatorHandle) -> list[Any]:
    return [j for inst in emu.state.instances.values() for j in inst.jobs.values()]


def posts(emu: EmulatorHandle) -> list[dict[str, Any]]:
    return [q for q in emu.api_requests() if q["method"] == "POST" and q["path"] == "/api/v1/jobs"]


# ------------------------------------------------------------------------------ the marker (unit)


def test_mark_appends_one_fresh_marker_and_keeps_the_callers_tags() -> None:
    doc: dict[str, Any] = {"tags": ["mine"]}
    marker = mark(doc)
    assert marker is not None and marker.startswith(MARKER_PREFIX)
    assert doc["tags"] == ["mine", marker]
    assert mark({}) != marker


def test_mark_leaves_a_full_or_bad_tag_list_alone() -> None:
    full = {"tags": [f"t{i}" for i in range(MAX_TAGS)]}
    assert mark(full) is None and len(full["tags"]) == MAX_TAGS
    bad: dict[str, Any] = {"tags": "not-a-list"}
    assert mark(bad) is None and bad["tags"] == "not-a-list"


async def test_find_is_bounded_and_survives_failing_lookups() -> None:
    subs = Submissions(proxy_settings("http://127.0.0.1:1", submission_recovery_seconds=0.3))
    calls = 0

    async def lookup(query: bytes) -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadError("still down")
        return 503, b"{}"

    assert await subs.find(lookup, MARKER_PREFIX + "x", "fake_manila") is None
    assert 2 <= calls <= 5 and subs.lost == 1


# ------------------------------------------------------------------------ through real servers


def test_dropped_submission_answer_gives_the_caller_exactly_the_created_job(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json={**JOB, "tags": ["mine"]}, timeout=20)
    assert r.status_code == 200, r.text
    jobs = created_jobs(emu)
    assert len(jobs) == 1 and len(posts(emu)) == 1  # created once, sent once
    assert r.json()["id"] == jobs[0].id and r.json()["backend"] == "fake_manila"
    # The marker went upstream, but the caller never sees it.
    assert any(t.startswith(MARKER_PREFIX) for t in jobs[0].tags)
    shown = httpx.get(proxy.url + f"/runtime/jobs/{jobs[0].id}", timeout=10).json()
    assert shown["tags"] == ["mine"]
    assert 'qcp_submission_lookups_total{outcome="found"} 1.0' in proxy.app.phaseout.metrics.render()[0].decode()
    listed = httpx.get(proxy.url + "/runtime/jobs", timeout=10).json()
    assert [j["tags"] for j in listed["jobs"]] == [["mine"]]
    # A tag search matching the marker's text ("qcp:req:...") finds only the caller's tags.
    search = httpx.get(proxy.url + "/runtime/facade/v1/jobs/tags", params={"search": "qcp"}, timeout=10)
    assert search.status_code == 200 and search.json()["tags"] == []
    search = httpx.get(proxy.url + "/runtime/facade/v1/jobs/tags", params={"search": "min"}, timeout=10)
    assert search.json()["tags"] == ["mine"]


def test_submission_answer_broken_off_after_creating_is_found_not_resubmitted(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    # "truncate" handles the request (the job exists) and sends half of the answer's body.
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "truncate", "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=20)
    assert r.status_code == 200 and r.json()["id"] == created_jobs(emu)[0].id


def test_submission_refused_with_503_is_409_with_its_marker_never_a_5xx(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "status", "status": 503, "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, headers={"X-Request-ID": "rid-5xx"}, timeout=20)
    assert r.status_code == 409  # the SDKs resubmit on 5xx
    body = r.json()
    assert body["errors"][0]["code"] == "outcome_unknown"
    assert body["marker"].startswith(MARKER_PREFIX) and body["request_id"] == "rid-5xx"
    assert body["lookup"] == f"GET /jobs?tags={body['marker']}"
    assert created_jobs(emu) == [] and len(posts(emu)) == 1
    # The advertised look-up works through the proxy (and finds nothing: nothing was created).
    assert httpx.get(proxy.url + "/runtime" + body["lookup"][4:], timeout=10).json()["count"] == 0


def test_lost_answer_not_found_within_the_window_is_409_naming_the_lookup(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(submission_recovery_seconds=0.5)
    emu.state.set_faults(
        add_rules=[
            {"match": "POST /v1/jobs", "action": "drop", "times": 1},
            {"match": "GET /v1/jobs", "action": "status", "status": 503},  # look-ups fail
        ]
    )
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=20)
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "outcome_unknown"
    assert "before resubmitting" in r.json()["errors"][0]["message"]
    assert 'qcp_submission_lookups_total{outcome="not_found"} 1.0' in proxy.app.phaseout.metrics.render()[0].decode()
    assert len(created_jobs(emu)) == 1 and len(posts(emu)) == 1


def test_marker_off_keeps_the_old_409_and_sends_no_tag(stack: Callable[..., Any]) -> None:
    emu, proxy = stack(submission_marker=False)
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "times": 1}])
    r = httpx.post(proxy.url + "/runtime/jobs", json=JOB, timeout=20)
    assert r.status_code == 409
    assert posts(emu)[0]["body"].get("tags") is None


def test_1000_submissions_with_10_percent_of_answers_dropped_lose_and_duplicate_none(
    stack: Callable[..., Any],
) -> None:
    emu, proxy = stack(access_log=False)
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "every": 10}])
    n = 1000
    with httpx.Client(base_url=proxy.url, timeout=30, limits=httpx.Limits(max_connections=8)) as c:

        def submit(i: int) -> tuple[int, str]:
            r = c.post("/runtime/jobs", json={**JOB, "tags": [f"n{i}"]})
            return r.status_code, r.json().get("id", "")

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(submit, range(n)))
    dropped = [q for q in posts(emu) if q.get("outcome") == "dropped"]
    assert len(dropped) == n // 10  # the fault did fire on 10 %
    assert [s for s, _ in results] == [200] * n  # 0 lost
    ids = [i for _, i in results]
    jobs = created_jobs(emu)
    assert len(posts(emu)) == n and len(jobs) == n  # 0 duplicated: one POST, one job per call
    assert sorted(ids) == sorted(j.id for j in jobs)  # every caller got its own job
    by_id = {j.id: j for j in jobs}
    assert all(f"n{i}" in by_id[ids[i]].tags for i in range(n))


def test_recovery_uses_no_retry_of_the_post_itself(stack: Callable[..., Any]) -> None:
    # Two lost answers in a row: each caller gets its own job; nothing is resubmitted.
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "times": 2}])

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as c:
            return list(await asyncio.gather(*(c.post("/runtime/jobs", json=JOB) for _ in range(2))))

    rs = asyncio.run(both())
    assert [r.status_code for r in rs] == [200, 200]
    assert len({r.json()["id"] for r in rs}) == 2 and len(created_jobs(emu)) == 2 and len(posts(emu)) == 2


def test_large_streamed_submission_is_marked_and_found_after_a_dropped_answer(stack: Callable[..., Any]) -> None:
    # Over the 1 MiB streaming threshold: tags are captured while the body streams and go back,
    # with the marker, as the last member; the rest of the body passes byte for byte.
    emu, proxy = stack()
    emu.state.set_faults(add_rules=[{"match": "POST /v1/jobs", "action": "drop", "times": 1}])
    params = {"version": 2, "pubs": [["x" * (2 * 1024 * 1024)]]}
    body = {"program_id": "sampler", "hub": "ibm-q", "tags": ["big", "one"], "backend": "fake_manila", "params": params}
    r = httpx.post(proxy.url + "/runtime/jobs", json=body, timeout=30)
    assert r.status_code == 200, r.text
    (job,) = created_jobs(emu)
    assert r.json()["id"] == job.id and len(posts(emu)) == 1
    assert job.tags[:2] == ["big", "one"] and job.tags[2].startswith(MARKER_PREFIX)
    forwarded = posts(emu)[0]["body"]
    assert "hub" not in forwarded and forwarded["params"] == params


def test_large_streamed_submission_without_tags_gets_only_the_marker(stack: Callable[..., Any]) -> None:
    emu, proxy = stack()
    body = {**JOB, "params": {"version": 2, "pubs": [["y" * (1536 * 1024)]]}}
    r = httpx.post(proxy.url + "/runtime/jobs", json=body, timeout=30)
    assert r.status_code == 200
    (job,) = created_jobs(emu)
    assert len(job.tags) == 1 and job.tags[0].startswith(MARKER_PREFIX)
    shown = httpx.get(proxy.url + f"/runtime/jobs/{job.id}", timeout=10).json()
    assert shown["tags"] == []
