"""/docs, /redoc and /openapi.json through a real proxy server: they work offline (#13).

Swagger UI once loaded from a CDN, so the page was blank on a machine without internet access,
and /openapi.json answered 500 while the admin routes' annotations were resolved lazily.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from .conftest import EmulatorHandle, Running, proxy_settings, start_proxy

#: Every URL a page names: attributes, and the strings Swagger UI's start-up script passes.
_URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']|(https?://[^\s"'<>)]+)""")


@pytest.fixture(scope="module")
def docs_proxy(emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """With metrics and a usage record on: every ops route the app can have is in the schema."""
    db = str(tmp_path_factory.mktemp("docs") / "usage.sqlite3")
    running = start_proxy(proxy_settings(emulator.url, metrics=True, usage_db=db))
    yield running
    running.server.stop()


def page_urls(html: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _URLS.finditer(html)]


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=20, trust_env=False)


def test_openapi_json_answers_200(docs_proxy: Running) -> None:
    r = get(docs_proxy.url + "/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/healthz", "/readyz", "/metrics", "/admin/usage", "/admin/policies", "/admin/routes"} <= set(doc["paths"])


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_names_no_external_url(docs_proxy: Running, page: str) -> None:
    r = get(docs_proxy.url + page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    urls = page_urls(r.text)
    assert urls, "the page names no script or stylesheet: the test would prove nothing"
    own = urlsplit(docs_proxy.url).netloc
    external = [u for u in urls if urlsplit(urljoin(docs_proxy.url + page, u)).netloc != own]
    assert external == [], f"{page} loads from another host (blank offline): {external}"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_assets_answer_200_with_content(docs_proxy: Running, page: str) -> None:
    html = get(docs_proxy.url + page).text
    assets = [u for u in page_urls(html) if u != "/openapi.json"]
    assert any(u.endswith(".js") for u in assets), assets
    for u in assets:
        r = get(urljoin(docs_proxy.url + page, u))
        assert r.status_code == 200, u
        assert len(r.content) > 1000, f"{u}: {len(r.content)} bytes"
    if page == "/docs":
        js = next(u for u in assets if u.endswith("swagger-ui-bundle.js"))
        body = get(urljoin(docs_proxy.url, js)).text
        # Swagger UI 4 shows "Unable to render this definition" for FastAPI's OpenAPI 3.1 document.
        assert "SwaggerUIBundle" in body and "isOAS31" in body


def test_swagger_oauth2_redirect_is_local(docs_proxy: Running) -> None:
    r = get(docs_proxy.url + "/docs/oauth2-redirect")
    assert r.status_code == 200
    assert not [u for u in page_urls(r.text) if u.startswith(("http://", "https://"))]
