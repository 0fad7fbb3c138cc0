"""proxy.classic.rewrite.translate_request: the Classic request as the new API gets it, without sockets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from proxy.classic.rewrite import UpstreamRequest, translate_request
from proxy.classic.routes import RouteTable


def route(method: str, path: str):
    return RouteTable().match(method, path).route


def test_job_submission_loses_the_classic_instance_keys_and_the_provider_query() -> None:
    doc = {"program_id": "sampler", "backend": "fake_manila", "hub": "h", "group": "g", "project": "p",
           "private": True, "params": {"version": 2}}
    req = translate_request(route("POST", "/jobs"), {}, b"provider=h%2Fg%2Fp&x=1", doc)
    assert req.method == "POST" and req.path == "/v1/jobs"
    assert req.query == b"x=1"
    assert req.body is not None
    assert json.loads(req.body) == {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}
    assert req.label == "POST /v1/jobs"


def test_session_creation_renames_and_parses_the_ttl() -> None:
    doc = {"backend": "fake_manila", "instance": "h/g/p", "max_session_ttl": "1h30m"}
    req = translate_request(route("POST", "/sessions"), {}, b"", doc)
    assert req.path == "/v1/sessions" and req.query == b""
    assert json.loads(req.body or b"") == {"backend": "fake_manila", "max_ttl": 5400, "mode": "dedicated"}


def test_path_parameters_fill_the_new_template_and_a_get_has_no_body() -> None:
    m = RouteTable().match("GET", "/jobs/abc-123")
    req = translate_request(m.route, m.params, b"", None)
    assert req == UpstreamRequest("GET", "/v1/jobs/abc-123", b"", None)


def test_a_query_without_provider_or_rewrites_passes_byte_for_byte() -> None:
    m = RouteTable().match("DELETE", "/jobs/abc-123")
    req = translate_request(m.route, m.params, b"a=%20b&a=c", None)
    assert req.query == b"a=%20b&a=c"


def test_the_value_is_frozen() -> None:
    req = translate_request(route("POST", "/jobs"), {}, b"", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.path = "/v1/other"  # type: ignore[misc]


@pytest.mark.parametrize("query", [b"", b"limit=10", b"exclude_params=False&limit=3", b"provider=h%2Fg%2Fp"])
def test_every_forward_row_rewrites_its_query_as_the_long_way_does(query: bytes) -> None:
    """translate_request skips the query rewrite where it would change nothing (an empty query and
    no default to add): every row still gets what parsing and re-encoding would give."""
    from urllib.parse import parse_qsl, urlencode

    from proxy.classic.rewrite import PROVIDER
    from proxy.classic.routes import Forward

    rows = [r for r in RouteTable().routes if isinstance(r.action, Forward)]
    assert any(r.action.query for r in rows)
    for r in rows:
        params = {p: "x1" for p in r.params}
        pairs = parse_qsl(query.decode(), keep_blank_values=True)
        for op in (PROVIDER, *r.action.query):
            pairs = op.apply(pairs)
        expected = urlencode(pairs).encode() if r.action.query or b"provider" in query else query
        assert translate_request(r, params, query, None).query == expected, r.key
