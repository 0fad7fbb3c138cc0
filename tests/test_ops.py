"""proxy.ops: the proxy's own endpoints, served by FastAPI next to the legacy hot path."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import EmulatorHandle, Running


def test_openapi_json_is_served(proxy: Running) -> None:
    """Regression: /openapi.json answered 500 while the admin routes' response types were
    imported late (inside the installer), where FastAPI could not resolve the annotations."""
    r = httpx.get(proxy.url + "/openapi.json", timeout=20, trust_env=False)
    assert r.status_code == 200, r.text
    paths = r.json()["paths"]
    for path in ("/healthz", "/readyz", "/admin/routes", "/admin/usage", "/admin/policies", "/metrics"):
        assert path in paths, path


def test_readyz_flips_to_not_ready_when_the_new_api_goes_away_and_back_when_it_returns() -> None:
    from proxy.serving import BackgroundServer

    from .conftest import proxy_settings, start_emulator, start_proxy

    emu = start_emulator()
    port = emu.server.port
    # The IAM side is a second emulator that stays up: only the new API goes away.
    iam = start_emulator()
    proxy = start_proxy(proxy_settings(iam.url, upstream_url=emu.url + "/api", readiness_ttl=0))
    try:
        assert httpx.get(proxy.url + "/readyz", timeout=20).status_code == 200
        emu.server.stop()
        r = httpx.get(proxy.url + "/readyz", timeout=20)
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "not_ready" and "new API unreachable" in r.json()["reason"]
        back = BackgroundServer(emu.app, port=port).start()  # the same upstream, on the same port
        try:
            assert httpx.get(proxy.url + "/readyz", timeout=20).status_code == 200
        finally:
            back.stop()
    finally:
        proxy.server.stop()
        iam.server.stop()


def test_readyz_trusts_a_recent_forward_instead_of_probing(make_proxy: Any, emulator: EmulatorHandle) -> None:
    proxy = make_proxy(readiness_ttl=600)
    emulator.clear()
    assert httpx.get(proxy.url + "/runtime/backends", timeout=20).status_code == 200
    for _ in range(3):
        assert httpx.get(proxy.url + "/readyz", timeout=20).status_code == 200
    probes = [r for r in emulator.api_requests() if r["path"].endswith("/v1/versions")]
    assert probes == []  # the forward above proved the new API reachable
    proxy_no_ttl = make_proxy(readiness_ttl=0)
    assert httpx.get(proxy_no_ttl.url + "/readyz", timeout=20).status_code == 200
    assert [r for r in emulator.api_requests() if r["path"].endswith("/v1/versions")]  # ttl 0: it probed


def test_the_admin_listener_opens_metrics_but_keeps_the_admin_rule(emulator: EmulatorHandle) -> None:
    """With admin_port, /metrics is served only by the admin listener, where Prometheus scrapes it
    without a token; /admin/* still need QCP_ADMIN_TOKEN there, and the main port has neither."""
    from proxy.serving import BackgroundServer, free_port

    from .conftest import proxy_settings, start_proxy

    settings = proxy_settings(emulator.url, admin_port=free_port(), admin_token="an-admin-token-123")
    proxy = start_proxy(settings)
    admin = BackgroundServer(proxy.app.admin_app, port=settings.admin_port, lifespan="off", interface="asgi3").start()
    try:
        assert httpx.get(admin.url + "/metrics", timeout=20).status_code == 200
        assert httpx.get(admin.url + "/admin/usage", timeout=20).status_code == 401
        ok = httpx.get(admin.url + "/admin/usage", headers={"Authorization": "Bearer an-admin-token-123"}, timeout=20)
        assert ok.status_code == 200
        assert httpx.get(proxy.url + "/metrics", timeout=20).status_code == 404
        assert httpx.get(proxy.url + "/admin/usage", timeout=20).status_code == 404
        assert httpx.get(proxy.url + "/healthz", timeout=20).status_code == 200
    finally:
        admin.stop()
        proxy.server.stop()
