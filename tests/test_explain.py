"""`qiskit-classic-proxy explain`: a dry run through the real proxy with in-process fakes, as a CLI.

Every test runs the command as a subprocess with the upstream and IAM pointed at a closed
loopback port: had anything left the process, the output would show a 502, not a translation.
"""

from __future__ import annotations

import json
import os
import re
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
    look = ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_") and k not in look}
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


# ---------------------------------------------------------------- bad input and readable output (#13)


def test_data_from_a_missing_file_printed_a_traceback(tmp_path: Path) -> None:
    """`explain -d @missing.json` once ended in a FileNotFoundError traceback."""
    missing = tmp_path / "missing.json"
    r = explain("POST", "/runtime/jobs", "-d", f"@{missing}")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"qiskit-classic-proxy explain: --data @{missing}: cannot read '{missing}': No such file or directory"
    ]
    r = explain("POST", "/runtime/jobs", "-d", f"@{tmp_path}")  # a folder
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_data_from_a_file_is_sent(tmp_path: Path) -> None:
    body = tmp_path / "session.json"
    body.write_text('{"max_session_ttl": 60, "backend": "ibm_fez"}')
    x = explain_json("POST", "/runtime/sessions", "-d", f"@{body}")
    assert x["upstream"]["body"]["max_ttl"] == 60


def test_known_path_with_another_method_said_not_a_classic_endpoint() -> None:
    """`explain DELETE /runtime/backends` once said "not a Classic endpoint", then showed a 405."""
    r = explain("DELETE", "/runtime/backends")
    assert r.returncode == 0, r.stderr
    assert "not a Classic endpoint" not in r.stdout
    route = next(ln for ln in r.stdout.splitlines() if ln.startswith("Route"))
    assert "the Classic path is known, for GET only" in route and "405" in route
    assert "HTTP 405" in r.stdout and "allow: GET" in r.stdout
    x = explain_json("PATCH", "/runtime/jobs/abc123")
    assert x["route"] is None and x["answer"]["status"] == 405
    assert x["allowed_methods"] == ["DELETE", "GET"]
    unknown = explain_json("GET", "/runtime/no/such/thing")
    assert "allowed_methods" not in unknown  # an unknown path has no methods to offer


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["GET", ""], "PATH is empty"),
        (["GET", "   "], "PATH is empty"),
        (["GE T", "/backends"], "is not an HTTP method"),
        (["", "/backends"], "is not an HTTP method"),
        (["GET", "/back\x01ends"], "control characters"),
        (["GET", "/backends", "-H", "X-Note: b\x01"], "printable ASCII"),
        (["GET", "/backends", "-H", "X-Note: \u00fcber"], "printable ASCII"),
        (["GET", "/backends", "-H", "Bad Name: v"], "a header name is a token"),
        (["GET", "/backends", "-H", "X-Note: \udcff"], "printable ASCII"),  # not UTF-8 from the shell
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    r = explain(*args)
    assert r.returncode == 2, r.stdout
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["POST", "/runtime/jobs", "-d", "{not json"],  # sent as is: the proxy's own 400 is the answer
        ["POST", "/runtime/jobs", "-d", "\udcff"],
        ["FOO", "/runtime/backends"],  # a token, just not a method the table has: 405
        ["get", "/runtime/backends"],
        ["GET", "runtime/backends"],
        ["GET", "/runtime/../backends"],
        ["GET", "http://example.invalid/x"],
        ["GET", "/\u00fcnicode"],
        ["GET", "/runtime/\udcffbackends"],
        ["GET", "/runtime/jobs/" + "x" * 300],
    ],
)
def test_odd_input_is_explained_without_a_traceback(args: list[str]) -> None:
    r = explain(*args)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Classic request")


def test_bad_json_body_says_so_and_shows_the_400() -> None:
    r = explain("POST", "/runtime/jobs", "-d", "{not json")
    assert "--data is not valid JSON (sent as is)" in r.stderr
    assert "HTTP 400" in r.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_explain_was_176_columns_wide_now_fits_the_terminal(columns: int) -> None:
    env = {"QCP_API_KEY": API_KEY, "QCP_SERVICE_CRN": CRN, "COLUMNS": str(columns)}
    for args in (["GET", "/runtime/backends?provider=ibm-q/open/main"],
                 ["POST", "/runtime/sessions", "-d", json.dumps({"max_session_ttl": 600, "backend": "ibm_fez",
                                                                  "note": "x" * 200})],
                 ["GET", "/runtime/health"]):
        r = explain(*args, env=env)
        assert r.returncode == 0, r.stderr
        long = [ln for ln in r.stdout.splitlines() if len(ln) > columns]
        assert long == [], long
        assert "\x1b[" not in r.stdout
    forced = explain("GET", "/runtime/health", env={**env, "FORCE_COLOR": "1"})
    assert "\x1b[" in forced.stdout
    no_color = explain("GET", "/runtime/health", env={**env, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not re.search(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7])m", no_color.stdout)
