"""Deeply nested / huge JSON bodies through real servers: a 400 naming the limit, never a 500
(a 5xx on POST /jobs makes the legacy SDKs resubmit), and nothing forwarded."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from .conftest import EmulatorHandle, Running

ROUTES = [
    ("POST", "/runtime/jobs"),
    ("PATCH", "/runtime/sessions/s-1"),
    ("PUT", "/runtime/jobs/j-1/tags"),
    ("POST", "/runtime/sessions"),
    ("POST", "/api/users/loginWithToken"),
]


def nested(n: int, opener: str = '{"a":') -> bytes:
    closer = "}" if opener.startswith("{") else "]"
    inner = opener * n + "1" + closer * n
    return ('{"program_id":"sampler","backend":"fake_manila","params":' + inner + "}").encode()


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("opener", ['{"a":', "["])
def test_body_nested_20000_deep_is_400_and_not_forwarded(
    client: httpx.Client, emulator: EmulatorHandle, method: str, path: str, opener: str
) -> None:
    r = client.request(method, path, content=nested(20_000, opener))
    assert r.status_code == 400, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "json_too_deep" and "QCP_MAX_JSON_DEPTH" in err["message"]
    assert emulator.api_requests() == []


def test_large_streamed_body_nested_too_deep_is_400(client: httpx.Client, emulator: EmulatorHandle) -> None:
    # Over the 1 MiB streaming threshold: the streaming filter's depth check answers.
    padding = '"pad":"' + "x" * (2 * 1024 * 1024) + '",'
    body = b"{" + padding.encode() + nested(5_000)[1:]
    r = client.post("/runtime/jobs", content=body)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "json_too_deep"
    assert emulator.api_requests() == []


def test_depth_limit_is_a_setting(make_proxy: Callable[..., Running], emulator: EmulatorHandle) -> None:
    proxy = make_proxy(max_json_depth=4)
    # "version": 2: a V2 job (without it the proxy reads a V1 Sampler job and translates it, #12).
    ok = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2, "a": {"b": 1}}}
    assert httpx.post(proxy.url + "/runtime/jobs", json=ok, timeout=10).status_code == 200
    deep = {**ok, "params": {"version": 2, "a": {"b": {"c": {"d": 1}}}}}
    r = httpx.post(proxy.url + "/runtime/jobs", json=deep, timeout=10)
    assert r.status_code == 400 and "4 levels" in r.json()["errors"][0]["message"]


def test_element_limit_is_a_setting(make_proxy: Callable[..., Running]) -> None:
    proxy = make_proxy(max_json_elements=100)
    body = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2, "v": list(range(200))}}
    r = httpx.post(proxy.url + "/runtime/jobs", json=body, timeout=10)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "json_too_large"
