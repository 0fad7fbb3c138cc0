"""proxy.ops: the proxy's own endpoints, served by FastAPI next to the legacy hot path."""

from __future__ import annotations

import httpx

from .conftest import Running


def test_openapi_json_is_served(proxy: Running) -> None:
    """Regression: /openapi.json answered 500 while the admin routes' response types were
    imported late (inside the installer), where FastAPI could not resolve the annotations."""
    r = httpx.get(proxy.url + "/openapi.json", timeout=20, trust_env=False)
    assert r.status_code == 200, r.text
    paths = r.json()["paths"]
    for path in ("/healthz", "/readyz", "/admin/routes", "/admin/usage", "/admin/policies", "/metrics"):
        assert path in paths, path
