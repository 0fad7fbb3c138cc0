"""Phase-out through real loopback servers: deprecation headers, per-route policies, admin access,
structured access logs. (Metrics: test_metrics.py; usage record and report: test_usage.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import MIGRATION_GUIDE_URL, ConfigError, load_settings
from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.phaseout.policy import CLASSIC_RETIRED, iso, parse_window
from proxy.phaseout.report import render_routes
from proxy.phaseout.usage import read_usage
from proxy.serving import free_port

from .conftest import EmulatorHandle, Running, proxy_settings, wait_until_ok

GUIDE = MIGRATION_GUIDE_URL
DEP = datetime(2026, 12, 1, tzinfo=timezone.utc)
SUN = datetime(2027, 6, 30, tzinfo=timezone.utc)
CI_TOKEN = "tok-ci-pipeline-0001"
DASH_TOKEN = "tok-dashboard-0002"
TOKENS = [f"ci-pipeline={CI_TOKEN}", f"dashboard={DASH_TOKEN}"]


def client_for(p: Running, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=p.url, timeout=20, trust_env=False, **kw)


def links(r: httpx.Response) -> dict[str, str]:
    """rel -> target of the Link header."""
    out = {}
    for part in r.headers.get("link", "").split(", <"):
        target, _, params = part.partition(">;")
        rel = [p.split("=", 1)[1].strip('"') for p in params.split(";") if p.strip().startswith("rel=")]
        if rel:
            out[rel[0]] = target.lstrip("<")
    return out


def epoch(d: datetime) -> str:
    return f"@{int(d.timestamp())}"


# ============================================================================ deprecation signals


def test_headers_on_translated_local_and_gone_answers(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(deprecation_date="2026-12-01T00:00:00Z", sunset_date="2027-06-30T00:00:00Z")
    with client_for(p) as c:
        answers = {
            "translated": c.get("/runtime/backends"),
            "translated error": c.get("/runtime/jobs/no-such-job-1"),
            "local": c.get("/api/version"),
            "410 removed": c.get("/runtime/health"),
        }
        assert [r.status_code for r in answers.values()] == [200, 404, 200, 410]
        for what, r in answers.items():
            assert r.headers["deprecation"] == epoch(DEP) == "@1796083200", what
            assert parsedate_to_datetime(r.headers["sunset"]) == SUN, what
            assert r.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT", what  # IMF-fixdate
            assert links(r) == {"deprecation": GUIDE, "sunset": GUIDE}, what
        # Not a legacy route: no legacy signals.
        assert "deprecation" not in c.get("/runtime/no/such/endpoint").headers
        assert "deprecation" not in c.get("/healthz").headers


def test_per_route_dates_override_the_global_ones(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(
        deprecation_date="2026-12-01T00:00:00Z",
        sunset_date="2027-06-30T00:00:00Z",
        routes={"GET /backends": {"deprecation": "2026-01-15T00:00:00Z", "sunset": "2026-09-01T12:00:00Z"}},
    )
    with client_for(p) as c:
        r = c.get("/runtime/backends")
        assert r.headers["deprecation"] == epoch(datetime(2026, 1, 15, tzinfo=timezone.utc))
        assert r.headers["sunset"] == "Tue, 01 Sep 2026 12:00:00 GMT"
        other = c.get("/runtime/backends/fake_manila/status")
        assert other.headers["deprecation"] == epoch(DEP)
        assert other.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"


def test_default_signal_without_configured_dates(client: httpx.Client) -> None:
    r = client.get("/runtime/backends")
    # Classic was retired on 1 July 2025: every Classic call is deprecated since then.
    assert r.headers["deprecation"] == epoch(CLASSIC_RETIRED) == "@1751328000"
    assert "sunset" not in r.headers
    assert links(r) == {"deprecation": GUIDE}


@pytest.mark.parametrize(
    "overrides",
    [
        {"deprecation_date": "2027-01-01T00:00:00Z", "sunset_date": "2026-01-01T00:00:00Z"},
        {"routes": {"GET /jobs": {"deprecation": "2027-01-01T00:00:00Z", "sunset": "2026-01-01T00:00:00Z"}}},
        {"deprecation_date": "2027-01-01T00:00:00Z", "routes": {"GET /jobs": {"sunset": "2026-06-01T00:00:00Z"}}},
        {"sunset_date": "2026-01-01T00:00:00Z", "routes": {"GET /jobs": {"deprecation": "2026-02-01T00:00:00Z"}}},
    ],
)
def test_sunset_before_deprecation_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="sunset is earlier than deprecation"):
        load_settings(None, **overrides)


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"GET /no/such/route": {"policy": "gone"}}, "no such Classic route"),
        ({"GET /jobs": {"policy": "brownout", "brownout_windows": ["2026-12-01T10:00:00Z"]}}, "START/END"),
        ({"GET /jobs": {"policy": "brownout", "brownout_windows": ["2026-12-01T11:00Z/2026-12-01T10:00Z"]}},
         "END is not after START"),
    ],
)
def test_bad_route_policies_stop_the_app_from_being_built(
    emulator: EmulatorHandle, routes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(proxy_settings(emulator.url, routes=routes))


def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    base.update(env)
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, env=base,
                          timeout=timeout)


@pytest.mark.parametrize(
    "extra",
    [
        {"QCP_DEPRECATION_DATE": "2027-01-01T00:00:00Z", "QCP_SUNSET_DATE": "2026-01-01T00:00:00Z"},
        {"QCP_ROUTES": json.dumps({"GET /usage": {"deprecation": "2027-01-01", "sunset": "2026-01-01"}})},
        {"QCP_ROUTES": json.dumps({"GET /nope": {"policy": "gone"}})},
    ],
)
def test_serve_refuses_to_start_on_inconsistent_phaseout_settings(extra: dict[str, str]) -> None:
    env = {"QCP_API_KEY": DEMO_API_KEY, "QCP_SERVICE_CRN": DEMO_CRN, "QCP_USAGE_DB": "", "QCP_PORT": str(free_port())}
    r = run_cli("serve", env={**env, **extra})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "sunset is earlier than deprecation" in lines[0] or "no such Classic route" in lines[0]
    assert "routes." in lines[0] or "sunset_date" in lines[0]  # names the setting


# ============================================================================ per-route policies


def assert_refusal(r: httpx.Response, code: str, replacement: str) -> dict[str, Any]:
    assert r.status_code == 410
    assert r.status_code != 429 and "retry-after" not in r.headers
    body = r.json()
    assert body["errors"][0]["code"] == code
    assert body["error"]["code"] == code  # the Classic shape legacy SDKs read
    assert body["replacement"] == replacement
    assert body["docs"] == GUIDE
    assert GUIDE in body["errors"][0]["message"]
    assert r.headers["deprecation"].startswith("@")  # 410s carry the signals too
    return body


def test_policy_gone_answers_410_without_reaching_upstream(
    make_proxy: Callable[..., Running], emulator: EmulatorHandle
) -> None:
    p = make_proxy(routes={"GET /backends/{backend}/status": {"policy": "gone"}}, sunset_date="2027-06-30T00:00:00Z")
    emulator.clear()
    with client_for(p) as c:
        r = c.get("/runtime/backends/fake_manila/status")
        body = assert_refusal(r, "endpoint_disabled", "GET /v1/backends/{backend}/status")
        assert body["sunset"] == "2027-06-30T00:00:00Z"
        assert "switched off" in body["error"]["message"]
        assert not [q for q in emulator.api_requests() if q["path"].endswith("/status")]
        # The policy is per route: the rest still translates.
        assert c.get("/runtime/backends/fake_manila/properties").status_code == 200


def test_policy_gone_on_a_local_route(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(routes={"GET /usage": {"policy": "gone"}})
    with client_for(p, headers={"User-Agent": "qiskit-ibm-runtime/0.40.1"}) as c:
        assert_refusal(c.get("/runtime/usage"), "endpoint_disabled", "none")


def test_brownout_window_active_and_inactive(make_proxy: Callable[..., Running]) -> None:
    now = time.time()
    active = f"{iso(now - 60)}/{iso(now + 600)}"
    past = f"{iso(now - 7200)}/{iso(now - 3600)}"
    future = f"{iso(now + 3600)}/{iso(now + 7200)}"
    p = make_proxy(
        routes={
            "GET /backends": {"policy": "brownout", "brownout_windows": [past, active]},
            "GET /backends/{backend}/status": {"policy": "brownout", "brownout_windows": [past, future]},
        }
    )
    with client_for(p) as c:
        for _ in range(5):
            body = assert_refusal(c.get("/runtime/backends"), "endpoint_brownout", "GET /v1/backends")
        assert body["brownout"]["until"] == iso(now + 600)
        assert "brownout" in body["error"]["message"] and "retrying will not help" in body["error"]["message"]
        for _ in range(5):
            assert c.get("/runtime/backends/fake_manila/status").status_code == 200


def test_brownout_share_over_many_requests(make_proxy: Callable[..., Running]) -> None:
    share, n = 0.25, 400
    p = make_proxy(routes={"GET /backends/{backend}/status": {"policy": "brownout", "brownout_share": share}})
    statuses: list[int] = []
    with client_for(p) as c:
        for _ in range(n):
            r = c.get("/runtime/backends/fake_manila/status")
            statuses.append(r.status_code)
            if r.status_code == 410:
                assert r.json()["errors"][0]["code"] == "endpoint_brownout"
    assert set(statuses) <= {200, 410}  # never 429: adaptive clients would back off silently
    gone = statuses.count(410)
    sd = (n * share * (1 - share)) ** 0.5  # binomial: 8.7 for 400 x 25 %
    assert abs(gone - n * share) < 4.5 * sd, f"{gone} of {n} answered 410, expected about {n * share:.0f}"


def test_effective_policies_are_shown(make_proxy: Callable[..., Running]) -> None:
    overrides: dict[str, Any] = {
        "sunset_date": "2027-06-30T00:00:00Z",
        "routes": {
            "GET /jobs": {"policy": "gone"},
            "GET /backends": {"policy": "brownout", "brownout_share": 0.1,
                              "brownout_windows": ["2026-12-01T10:00:00Z/2026-12-01T11:00:00Z"]},
        },
    }
    settings = load_settings(None, **overrides)
    text = render_routes(settings)
    row = {line.split()[1]: line for line in text.splitlines()[1:] if line.split()[:1] == ["GET"]}
    assert "gone" in row["/jobs"].split()[3]
    assert "brownout (10% of requests, 2026-12-01T10:00:00Z/2026-12-01T11:00:00Z)" in row["/backends"]
    assert "translate" in row["/instances"] and "2027-06-30T00:00:00Z" in row["/instances"]
    md = render_routes(settings, markdown=True)
    assert "| GET | `/jobs` | forward | gone |" in md
    # The same, as data, on the admin path.
    p = make_proxy(**overrides)
    with client_for(p) as c:
        policies = {d["route"]: d for d in c.get("/admin/policies").json()}
    assert policies["GET /jobs"]["policy"] == "gone" and policies["GET /jobs"]["state"] == "disabled"
    assert policies["GET /backends"]["brownout_share"] == 0.1
    assert policies["GET /health"]["state"] == "removed"
    assert policies["GET /instances"]["sunset"] == "2027-06-30T00:00:00Z"


def test_parse_window_accepts_dates_and_offsets() -> None:
    s, e = parse_window("2026-12-01/2026-12-02")
    assert e - s == 86400
    s2, e2 = parse_window("2026-12-01T10:00:00+01:00/2026-12-01T10:30:00Z")
    assert (s2, e2 - s2) == (datetime(2026, 12, 1, 9, tzinfo=timezone.utc).timestamp(), 5400)


# ============================================================================ admin access


def test_admin_open_to_loopback_without_tokens(client: httpx.Client) -> None:
    assert client.get("/admin/usage").status_code == 200
    assert client.get("/metrics").status_code == 200
    # DNS rebinding: a web page reaching the loopback port under its own host name.
    r = client.get("/admin/usage", headers={"Host": "evil.example:8080"})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "bad_host"


def test_admin_refuses_client_token_callers(make_proxy: Callable[..., Running]) -> None:
    p = make_proxy(client_tokens=TOKENS)
    with client_for(p) as c:
        bearer = c.get("/admin/usage", headers={"Authorization": f"Bearer {CI_TOKEN}"})
        assert bearer.status_code == 403 and bearer.json()["errors"][0]["code"] == "admin_forbidden"
        login = c.post("/api/users/loginWithToken", json={"apiToken": DASH_TOKEN}).json()["id"]
        assert c.get("/admin/usage", headers={"X-Access-Token": login}).status_code == 403
        assert c.get("/metrics", headers={"X-Access-Token": DASH_TOKEN}).status_code == 403
        assert c.get("/admin/routes", headers={"Authorization": f"Bearer {CI_TOKEN}"}).status_code == 403
        # The operator on the host, without a client token:
        assert c.get("/admin/usage").status_code == 200
        # Health endpoints stay open.
        assert c.get("/healthz", headers={"Authorization": f"Bearer {CI_TOKEN}"}).status_code == 200


def test_admin_token_when_configured(make_proxy: Callable[..., Running]) -> None:
    admin = "admin-token-abcdef-0123"
    p = make_proxy(client_tokens=TOKENS, admin_token=admin)
    with client_for(p) as c:
        r = c.get("/admin/usage")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["errors"][0]["code"] == "admin_token_required"
        assert c.get("/admin/usage", headers={"Authorization": f"Bearer {CI_TOKEN}"}).status_code == 401
        assert c.get("/admin/usage", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/admin/usage", headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and "in_use" in ok.json()
        assert c.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert admin not in r.text


async def test_admin_refuses_remote_callers_without_admin_token(proxy: Running) -> None:
    # Only loopback sockets are available here; the peer address is what the rule reads.
    transport = httpx.ASGITransport(app=proxy.app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        for path in ("/admin/usage", "/admin/policies", "/metrics"):
            r = await c.get(path)
            assert r.status_code == 403, path
            assert r.json()["errors"][0]["code"] == "admin_loopback_only"
        assert (await c.get("/healthz")).status_code == 200


# ============================================================================ structured logs


def test_one_json_access_line_per_request_without_secrets(
    make_proxy: Callable[..., Running], json_logs: list[str]
) -> None:
    p = make_proxy(client_tokens=TOKENS, access_log=True)
    with client_for(p) as c:
        c.get("/runtime/backends", headers={"Authorization": f"Bearer {CI_TOKEN}", "X-Request-ID": "rid-log-1"})
        c.get("/runtime/jobs/job-does-not-exist", headers={"X-Access-Token": DASH_TOKEN, "X-Request-ID": "rid-log-2"})
        c.get("/runtime/health", headers={"Authorization": f"Bearer {CI_TOKEN}", "X-Request-ID": "rid-log-3"})
    deadline = time.monotonic() + 5
    while len([ln for ln in json_logs if '"request_id":"rid-log' in ln]) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    docs = [json.loads(ln) for ln in json_logs]
    access = {d["request_id"]: d for d in docs if d.get("logger") == "qiskit_classic_proxy.access"}
    a = access["rid-log-1"]
    assert (a["caller"], a["route"], a["upstream"], a["status"], a["action"]) == (
        "ci-pipeline", "GET /backends", "GET /v1/backends", 200, "forward")
    assert isinstance(a["ms"], float) and a["ms"] >= 0 and a["ts"].endswith("Z")
    b = access["rid-log-2"]
    assert (b["caller"], b["route"], b["upstream"], b["status"]) == (
        "dashboard", "GET /jobs/{job_id}", "GET /v1/jobs/job-does-not-exist", 404)
    g = access["rid-log-3"]
    assert (g["route"], g["action"], g["status"], g["upstream"]) == ("GET /health", "gone", 410, "-")
    everything = "\n".join(json_logs)
    for secret in (CI_TOKEN, DASH_TOKEN, DEMO_API_KEY, "Bearer "):
        assert secret not in everything


def test_serve_log_format_json_and_usage_record(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """`serve --log-format json` as a real process: JSON access lines, usage written at shutdown."""
    port = free_port()
    db = tmp_path / "usage.sqlite3"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("QCP_")},
           "QCP_API_KEY": DEMO_API_KEY, "QCP_SERVICE_CRN": DEMO_CRN, "QCP_USAGE_DB": str(db),
           "QCP_CLIENT_TOKENS": f"ci-pipeline={CI_TOKEN}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--log-format", "json",
         "--upstream-url", emulator.url + "/api", "--iam-url", emulator.url + "/identity/token"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(url + "/healthz", proc)
        h = {"Authorization": f"Bearer {CI_TOKEN}", "User-Agent": "qiskit-ibm-runtime/0.23.0 (x)"}
        for i in range(3):
            r = httpx.get(url + "/runtime/backends", headers={**h, "X-Request-ID": f"rid-serve-{i}"}, timeout=10)
            assert r.status_code == 200 and r.headers["deprecation"].startswith("@")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    docs = []
    for line in stderr.splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            continue  # uvicorn's own start-up lines
    access = [d for d in docs if d.get("logger") == "qiskit_classic_proxy.access"]
    assert [d["request_id"] for d in access] == ["rid-serve-0", "rid-serve-1", "rid-serve-2"]
    assert all(d["caller"] == "ci-pipeline" and d["route"] == "GET /backends" for d in access)
    assert CI_TOKEN not in stderr and DEMO_API_KEY not in stderr
    rows = read_usage(str(db))
    assert [(r.caller, r.client, r.endpoint, r.count) for r in rows] == [
        ("ci-pipeline", "qiskit_ibm_runtime-0.23", "GET /backends", 3)
    ]
