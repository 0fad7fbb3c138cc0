"""Property tests (hypothesis) over the request translation and the JSON limits: random legacy
paths, queries and JSON bodies never raise anything but BadRequest, and the streaming filter
agrees with the in-memory path on what it accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.classic.bodystream import JsonLimitError, KeyFilter
from proxy.classic.rewrite import check_json_shape, parse_json_object, translate_request
from proxy.classic.routes import RouteTable, normalize
from proxy.errors import BadRequest, ProxyError

TABLE = RouteTable()
BODY_ROUTES = [("POST", "/jobs"), ("PATCH", "/sessions/s-1"), ("PUT", "/jobs/j-1/tags"), ("POST", "/sessions")]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


@given(doc=objects)
def test_shape_check_accepts_exactly_what_is_within_the_depth_limit(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    d = depth(doc)
    for limit in (2, 3, 5):
        if d > limit:
            with pytest.raises(BadRequest) as err:
                check_json_shape(raw, max_depth=limit)
            assert err.value.code == "json_too_deep"
        else:
            check_json_shape(raw, max_depth=limit)
            assert parse_json_object(raw, max_depth=limit) == json.loads(raw)


@given(doc=objects, limit=st.integers(2, 6))
def test_streaming_filter_refuses_the_same_depths(doc: dict[str, Any], limit: int) -> None:
    raw = json.dumps(doc).encode()
    if depth(doc) > limit:
        with pytest.raises(JsonLimitError):
            _stream(raw, limit)
    else:
        _stream(raw, limit)


def _stream(raw: bytes, limit: int) -> bytes:
    f = KeyFilter(("hub",), max_depth=limit)
    return f.feed(raw) + f.close()


@given(raw=st.binary(max_size=300))
def test_any_bytes_are_a_dict_or_a_400(raw: bytes) -> None:
    try:
        assert isinstance(parse_json_object(raw), dict)
    except BadRequest:
        pass


@pytest.mark.parametrize("n", [10_000, 20_000])
@pytest.mark.parametrize("opener", ['{"a":', "["])
def test_deeply_nested_body_is_400_not_a_recursion_error(n: int, opener: str) -> None:
    closer = "}" if opener.startswith("{") else "]"
    raw = (opener * n + "1" + closer * n).encode()
    with pytest.raises(BadRequest) as err:
        parse_json_object(raw)
    assert err.value.status == 400 and "QCP_MAX_JSON_DEPTH" in err.value.message


def test_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"s": "[" * 1000 + '\\"{' * 500}).encode()
    assert parse_json_object(raw, max_depth=2)["s"].startswith("[[")


def test_too_many_values_is_400_naming_the_limit() -> None:
    raw = json.dumps({"a": list(range(100))}).encode()
    with pytest.raises(BadRequest) as err:
        parse_json_object(raw, max_elements=50)
    assert err.value.code == "json_too_large" and "QCP_MAX_JSON_ELEMENTS" in err.value.message
    assert parse_json_object(raw, max_elements=200)["a"][-1] == 99


segments = st.lists(st.sampled_from(["jobs", "sessions", "tags", "j-1", "results", "..", "%2e", "", "api"]), max_size=5)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    segs=segments,
    query=st.binary(max_size=40),
    doc=st.none() | objects,
)
def test_translation_of_random_legacy_requests_raises_only_proxy_errors(
    method: str, segs: list[str], query: bytes, doc: dict[str, Any] | None
) -> None:
    """Random paths, queries and bodies: a ProxyError (a clear 4xx) or a request, never a crash."""
    try:
        path = normalize("/runtime/" + "/".join(segs), None)
        m = TABLE.match(method, path)
        req = translate_request(m.route, m.params, query, dict(doc) if doc is not None else None)
    except ProxyError as err:
        assert 400 <= err.status < 500
        return
    assert req.path.startswith("/v1/")
    if req.body is not None:
        assert isinstance(json.loads(req.body), dict)


@given(doc=objects, route=st.sampled_from(BODY_ROUTES))
def test_body_rewrites_keep_valid_json_objects(doc: dict[str, Any], route: tuple[str, str]) -> None:
    m = TABLE.match(*route)
    try:
        req = translate_request(m.route, m.params, b"", dict(doc))
    except BadRequest:
        return  # e.g. an unparseable session TTL
    assert isinstance(json.loads(req.body or b"{}"), dict)


_QUERY_OPS = [
    (),
    ("provider",),
    ("provider", "lower"),
    ("provider", "lower", "default"),
    ("drop",),
]


@given(
    raw=st.text(alphabet="aZ09._~-=&%+ ;/providerTrueFalse", max_size=24).map(str.encode),
    which=st.sampled_from(_QUERY_OPS),
)
def test_query_rewrite_shortcut_gives_what_parsing_and_reencoding_give(raw: bytes, which: tuple[str, ...]) -> None:
    """rewrite_query answers plain queries without urlencode: byte for byte the long way's result."""
    from urllib.parse import parse_qsl, urlencode

    from proxy.classic.rewrite import PROVIDER, default_query, drop_query, lower_bools, rewrite_query

    named = {
        "provider": PROVIDER,
        "lower": lower_bools("exclude_params", "pending"),
        "default": default_query("exclude_params", "true"),
        "drop": drop_query("a", "version"),
    }
    ops = [named[w] for w in which]
    expected = raw
    if ops:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        for op in ops:
            pairs = op.apply(pairs)
        expected = urlencode(pairs).encode("latin-1")
    assert rewrite_query(raw, ops) == expected
