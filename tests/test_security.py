"""Secrets and trust boundaries: what must never leak, who may call, what never goes upstream."""

from __future__ import annotations

import io
import logging
import time

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY
from proxy.logs import JsonFormatter

from .conftest import EmulatorHandle, Running, attached

CALLER_SECRET = "caller-bearer-should-stay-home"


def test_callers_credentials_never_reach_the_upstream(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get(
        "/runtime/backends",
        headers={
            "Authorization": f"Bearer {CALLER_SECRET}",
            "X-Access-Token": "caller-access-token",
            "Cookie": "session=caller-cookie",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Connection": "keep-alive, X-Custom-Hop",
            "X-Custom-Hop": "hop",
            "TE": "trailers",
        },
    )
    assert r.status_code == 200, r.text
    (req,) = emulator.api_requests()
    h = req["headers"]
    assert CALLER_SECRET not in h["authorization"]
    for name in ("x-access-token", "cookie", "proxy-authorization", "x-custom-hop", "te"):
        assert name not in h, name
    flat = repr(req)
    for secret in (CALLER_SECRET, "caller-access-token", "caller-cookie"):
        assert secret not in flat


def test_api_key_and_bearer_never_in_responses_or_logs(
    client: httpx.Client, emulator: EmulatorHandle, captured_logs: io.StringIO
) -> None:
    bodies = []
    for method, path in [
        ("GET", "/runtime/backends"),
        ("GET", "/runtime/jobs/doesnotexist"),
        ("GET", "/runtime/health"),
        ("POST", "/runtime/jobs"),
        ("GET", "/api/users/me"),
        ("GET", "/readyz"),
    ]:
        r = client.request(method, path, content=b"{not json" if method == "POST" else None)
        bodies.append(r.text + repr(dict(r.headers)))
    bearer = emulator.api_requests()[0]["headers"]["authorization"].split()[1]
    text = "\n".join(bodies) + captured_logs.getvalue()
    assert DEMO_API_KEY not in text
    assert bearer not in text


def test_api_key_rejected_by_iam_is_not_echoed(make_proxy, captured_logs: io.StringIO) -> None:
    wrong = "wrong-key-that-must-not-leak"
    p: Running = make_proxy(api_key=wrong)
    r = httpx.get(p.url + "/runtime/backends", timeout=20)
    assert r.status_code == 502
    body = r.json()
    assert body["errors"][0]["code"] == "iam_api_key_rejected"
    assert body["iam_error_code"] == "BXNIM0415E"
    assert wrong not in r.text
    assert wrong not in captured_logs.getvalue()


def test_json_logs_carry_no_secrets(client: httpx.Client, emulator: EmulatorHandle) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    with attached(handler, logging.DEBUG):
        client.get("/runtime/backends", headers={"Authorization": f"Bearer {CALLER_SECRET}"})
        client.get("/runtime/jobs/nope", headers={"X-Access-Token": "tok-xyz"})
        deadline = time.monotonic() + 5  # the access line is written just after the answer is sent
        while buf.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    out = buf.getvalue()
    assert '"route":"GET /backends"' in out
    assert '"route":"GET /jobs/{job_id}"' in out
    for secret in (DEMO_API_KEY, CALLER_SECRET, "tok-xyz", "Bearer "):
        assert secret not in out


def test_client_tokens_gate_every_forward(make_proxy, emulator: EmulatorHandle) -> None:
    p = make_proxy(client_tokens="alice=alice-token-123")
    emulator.clear()
    with httpx.Client(base_url=p.url, timeout=20) as c:
        r = c.get("/runtime/backends")
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "client_token_required"
        assert emulator.api_requests() == []
        assert c.get("/runtime/backends", headers={"Authorization": "Bearer wrong-token-000"}).status_code == 401
        assert c.get("/runtime/backends", headers={"Authorization": "Bearer alice-token-123"}).status_code == 200
        # The Classic login: only listed tokens log in; the minted access token then works.
        assert c.post("/api/users/loginWithToken", json={"apiToken": "nope-nope-nope"}).status_code == 401
        login = c.post("/api/users/loginWithToken", json={"apiToken": "alice-token-123"})
        assert login.status_code == 200
        access = login.json()["id"]
        assert access != "alice-token-123"
        assert c.get("/runtime/backends", headers={"X-Access-Token": access}).status_code == 200
        assert c.get("/api/users/me", headers={"X-Access-Token": access}).json()["username"] == "alice"
        # Logging out revokes that access token.
        assert c.post("/api/logout", headers={"X-Access-Token": access}).status_code == 204
        assert c.get("/runtime/backends", headers={"X-Access-Token": access}).status_code == 401
    # and the client token itself never went upstream
    assert "alice-token-123" not in repr(emulator.api_requests())


def test_foreign_host_header_is_refused_on_a_loopback_proxy(client: httpx.Client, emulator: EmulatorHandle) -> None:
    # DNS rebinding: a web page on evil.example resolving to 127.0.0.1 must not use the credentials.
    r = client.get("/runtime/backends", headers={"Host": "evil.example:8080"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "bad_host"
    assert emulator.api_requests() == []


@pytest.mark.parametrize(
    "path",
    [
        "/runtime/jobs/..%2F..%2Fusers/me",
        "/runtime/jobs/%2e%2e/cancel",
        "/runtime/backends/fake_manila%2F..%2F..%2Fjobs/status",
        "/runtime/jobs/abc%5C..%5Cx",
    ],
)
def test_path_traversal_is_refused_and_not_forwarded(
    proxy: Running, emulator: EmulatorHandle, path: str
) -> None:
    emulator.clear()
    # raw request line, so the client does not normalize the path for us
    with httpx.Client(base_url=proxy.url) as c:
        req = c.build_request("GET", "/")
        req.url = req.url.copy_with(raw_path=path.encode())
        r = c.send(req)
    assert r.status_code in (400, 404)
    assert r.headers["content-type"].startswith("application/json")
    assert emulator.api_requests() == []


def test_malformed_json_is_400_and_nothing_forwarded(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.post("/runtime/jobs", content=b'{"program_id": "sampler",')
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "invalid_json"
    assert emulator.api_requests() == []


def test_body_over_the_limit_is_413(make_proxy, emulator: EmulatorHandle) -> None:
    p = make_proxy(max_body_bytes=2048)
    emulator.clear()
    r = httpx.post(p.url + "/runtime/jobs", content=b'{"x":"' + b"a" * 5000 + b'"}', timeout=20)
    assert r.status_code == 413
    assert emulator.api_requests() == []


def test_request_id_is_propagated_and_echoed(client: httpx.Client, emulator: EmulatorHandle) -> None:
    r = client.get("/runtime/backends", headers={"X-Request-ID": "my-trace-123"})
    assert r.headers["x-request-id"] == "my-trace-123"
    assert emulator.api_requests()[0]["headers"]["x-request-id"] == "my-trace-123"
    r = client.get("/runtime/backends", headers={"X-Request-ID": "bad id with spaces"})
    generated = r.headers["x-request-id"]
    assert generated and " " not in generated
