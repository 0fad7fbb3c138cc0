"""`qiskit-classic-proxy explain`: a dry run through the real proxy with in-process fakes, as a CLI.

Every test runs the command as a subprocess with the upstream and IAM pointed at a closed
loopback port: had anything left the process, the output would show a 502, not a translation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.config import MIGRATION_GUIDE_URL
from proxy.serving import free_port

CRN = "crn:v1:bluemix:public:quantum-computing:eu-de:a/abc123:inst-1::"
API_KEY = "very-secret-api-key-77"
DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens here


def explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    base.update({"QCP_UPSTREAM_URL": DEAD + "/api", "QCP_IAM_URL": DEAD + "/identity/token"})
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", "explain", *args], capture_output=True, text=True, env=base, timeout=30
    )


def explain_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = explain(*args, "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def test_translated_endpoint_backends_with_provider() -> None:
    env = {"QCP_API_KEY": API_KEY, "QCP_SERVICE_CRN": CRN}
    x = explain_json("GET", "/runtime/backends?provider=ibm-q/open/main", env=env)
    assert x["outcome"] == "forward"
    assert x["route"]["key"] == "GET /backends"
    assert x["route"]["action"] == "forward"
    assert x["route"]["instance"] == f"ibm-q/open/main -> {CRN}"
    up = x["upstream"]
    assert up["method"] == "GET"
    # provider is dropped: the instance travels as Service-CRN.
    assert up["url"] == f"{DEAD}/api/v1/backends"
    headers = dict(up["headers"])
    assert headers["service-crn"] == CRN
    assert headers["authorization"] == "Bearer ***"
    assert headers["ibm-api-version"]
    assert up["body"] is None
    assert x["phaseout_headers"]["deprecation"].startswith("@")
    out = json.dumps(x)
    assert API_KEY not in out
    assert "dry-run-iam-token" not in out  # the (fake) bearer is masked too


def test_translated_endpoint_text_output() -> None:
    env = {"QCP_API_KEY": API_KEY, "QCP_SERVICE_CRN": CRN}
    r = explain("GET", "/runtime/backends?provider=ibm-q/open/main", env=env)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "Route             GET /backends  [backends]  forward" in text
    assert "Upstream request (dry run: not sent)" in text
    assert f"GET {DEAD}/api/v1/backends" in text
    assert "authorization: Bearer ***" in text
    assert f"service-crn: {CRN}" in text
    assert "deprecation: @" in text
    assert API_KEY not in text + r.stderr


def test_rewritten_endpoint_session_create() -> None:
    body = {"instance": "ibm-q/open/main", "max_session_ttl": "2h", "backend": "ibm_fez"}
    x = explain_json(
        "POST", "/runtime/sessions", "--data", json.dumps(body),
        "--header", "X-Access-Token: legacy-token-should-be-masked",
        "--header", "User-Agent: qiskit-ibm-runtime/0.23.0 (Python 3.11)",
        env={"QCP_SERVICE_CRN": CRN},  # no API key: explain must still work
    )
    assert x["outcome"] == "forward"
    assert x["route"]["key"] == "POST /sessions"
    assert "rename max_session_ttl->max_ttl" in x["route"]["maps_to"]
    up = x["upstream"]
    assert (up["method"], up["url"]) == ("POST", f"{DEAD}/api/v1/sessions")
    assert up["body"] == {"backend": "ibm_fez", "max_ttl": 7200, "mode": "dedicated"}
    headers = dict(up["headers"])
    assert headers["content-type"] == "application/json"
    assert headers["service-crn"] == CRN
    assert "x-access-token" not in headers  # the caller's credentials never go upstream
    assert dict(x["request"]["headers"])["x-access-token"] == "***"
    assert "legacy-token-should-be-masked" not in json.dumps(x)


def test_rewritten_endpoint_text_output_shows_body() -> None:
    r = explain("POST", "/runtime/sessions", "-d", '{"max_session_ttl": 600, "backend": "ibm_fez"}')
    assert r.returncode == 0, r.stderr
    assert '"max_ttl": 600' in r.stdout
    assert "max_session_ttl" in r.stdout  # in the Classic request line, not upstream
    assert r.stdout.index('"max_ttl": 600') > r.stdout.index("Upstream request")
    assert "placeholder" in r.stdout  # no CRN configured: said so


def test_removed_endpoint_health() -> None:
    x = explain_json("GET", "/health")
    assert x["outcome"] == "gone"
    assert x["upstream"] is None
    a = x["answer"]
    assert a["status"] == 410
    assert a["body"]["errors"][0]["code"] == "endpoint_removed"
    assert a["body"]["docs"] == MIGRATION_GUIDE_URL
    assert x["phaseout_headers"]["link"].startswith(f"<{MIGRATION_GUIDE_URL}>")
    text = explain("GET", "/api/health").stdout
    assert "HTTP 410" in text and "removed from the new API" in text and "nothing would be forwarded" in text


def test_policy_from_config_file_is_applied(tmp_path: Path) -> None:
    cfg = tmp_path / "qcp.toml"
    cfg.write_text(
        'sunset_date = 2027-06-30T00:00:00Z\n'
        '[routes."GET /jobs"]\npolicy = "gone"\n'
        '[routes."GET /backends"]\npolicy = "brownout"\nbrownout_share = 0.25\n'
    )
    x = explain_json("GET", "/runtime/jobs?limit=5", "--config", str(cfg))
    assert x["outcome"] == "disabled"
    assert x["answer"]["status"] == 410
    assert x["answer"]["body"]["errors"][0]["code"] == "endpoint_disabled"
    assert x["answer"]["body"]["replacement"] == "GET /v1/jobs"
    assert x["phaseout_headers"]["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    # A share-based brownout is described, not rolled: the dry run shows the translation.
    y = explain_json("GET", "/runtime/backends", "--config", str(cfg))
    assert y["outcome"] == "forward"
    assert y["route"]["policy"] == "brownout (25% of requests)"
    assert any("25%" in n for n in y["notes"])


def test_local_and_unknown_endpoints() -> None:
    x = explain_json("GET", "/api/version")
    assert x["outcome"] == "local" and x["answer"]["status"] == 200 and x["upstream"] is None
    y = explain_json("GET", "/runtime/no/such/thing")
    assert y["route"] is None and y["answer"]["status"] == 404


@pytest.mark.parametrize("bad", [["GET"], ["GET", "/x", "--header", "no-colon"]])
def test_usage_errors(bad: list[str]) -> None:
    r = explain(*bad)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
