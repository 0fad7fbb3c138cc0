"""Regression tests, each named after the bug it pins."""

from __future__ import annotations

import httpx

from proxy.upstream.transport import AiohttpTransport

from .conftest import proxy_settings, start_emulator, start_proxy


def test_aiohttp_does_not_silently_resend_a_dropped_delete() -> None:
    # aiohttp retries idempotent methods on a dropped pooled connection by default; a resent
    # DELETE would answer 404 for a job that was in fact deleted.
    emu = start_emulator()
    proxy = start_proxy(proxy_settings(emu.url), transport=AiohttpTransport())
    try:
        with httpx.Client(base_url=proxy.url, timeout=10) as c:
            body = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}
            job = c.post("/runtime/jobs", json=body)
            job_id = job.json()["id"]
            c.post(f"/runtime/jobs/{job_id}/cancel")
            emu.state.set_faults(add_rules=[{"match": "DELETE /v1/jobs/*", "action": "drop", "times": 1}])
            emu.clear()
            r = c.delete(f"/runtime/jobs/{job_id}")
        assert r.status_code == 502
        assert len([q for q in emu.api_requests() if q["method"] == "DELETE"]) == 1
    finally:
        proxy.server.stop()
        emu.server.stop()
