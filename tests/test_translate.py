"""Query and body rewrite operations."""

from __future__ import annotations

import pytest

from proxy.classic.rewrite import parse_duration, parse_json_object, rewrite_body, rewrite_query
from proxy.classic.routes import JOB_SUBMIT, PROVIDER, SESSION_CREATE
from proxy.errors import BadRequest


def test_provider_is_dropped_and_the_rest_kept_in_order() -> None:
    raw = b"limit=5&provider=ibm-q%2Fopen%2Fmain&tags=a&tags=b&offset=10"
    assert rewrite_query(raw, [PROVIDER]) == b"limit=5&tags=a&tags=b&offset=10"


def test_job_submission_rewrite_keeps_unknown_fields() -> None:
    doc = {"program_id": "sampler", "hub": "h", "group": "g", "project": "p", "private": True, "x_new": 1}
    assert rewrite_body(doc, JOB_SUBMIT) == {"program_id": "sampler", "x_new": 1}


def test_session_rewrite() -> None:
    doc = {"backend": "b", "instance": "h/g/p", "max_session_ttl": "2h30m"}
    assert rewrite_body(doc, SESSION_CREATE) == {"backend": "b", "max_ttl": 9000, "mode": "dedicated"}


def test_session_rewrite_keeps_an_explicit_max_ttl() -> None:
    doc = {"backend": "b", "max_ttl": 100, "max_session_ttl": 200, "mode": "batch"}
    assert rewrite_body(doc, SESSION_CREATE) == {"backend": "b", "max_ttl": 100, "mode": "batch"}


@pytest.mark.parametrize(
    ("value", "seconds"), [(600, 600), ("600", 600), ("1h", 3600), ("90m", 5400), ("1h 30m", 5400), ("45s", 45)]
)
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", True, None, "1d"])
def test_parse_duration_refuses_nonsense(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_bad_duration_is_a_400() -> None:
    with pytest.raises(BadRequest):
        rewrite_body({"max_session_ttl": "forever"}, SESSION_CREATE)


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b"\xff\xfe", b'"x"'])
def test_malformed_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json_object(raw)


def test_empty_body_is_an_empty_object() -> None:
    assert parse_json_object(b"  ") == {}
