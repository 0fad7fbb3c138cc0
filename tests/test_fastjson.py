"""proxy/fastjson.py: orjson's speed without changing what the proxy accepts or the values it sends."""

from __future__ import annotations

import json

import pytest

from proxy import fastjson

DOCS = [
    {"id": "d1abc", "state": {"status": "Completed"}, "tags": ["a", "é"], "cost": 600, "x": 0.1, "n": None},
    {"jobs": [{"id": "j1", "created": "2026-11-20T10:00:00Z"}], "count": 2**63 - 1, "neg": -(2**63)},
    [1, 2.5, True, False, None, "ünïcode ✓", {"nested": {"deep": [[]]}}],
]


@pytest.mark.parametrize("doc", DOCS)
def test_same_value_as_the_stdlib_both_ways(doc: object) -> None:
    raw = json.dumps(doc).encode()
    assert fastjson.loads(raw) == json.loads(raw)
    assert json.loads(fastjson.dumps(doc)) == doc


def test_integers_beyond_64_bits_keep_their_precision() -> None:
    """orjson alone reads 2**70 as a float; a job parameter must not change on the way."""
    raw = b'{"seed": 1180591620717411303424, "neg": -1180591620717411303424}'
    doc = fastjson.loads(raw)
    assert doc == {"seed": 2**70, "neg": -(2**70)} and isinstance(doc["seed"], int)
    assert fastjson.dumps(doc) == b'{"seed":1180591620717411303424,"neg":-1180591620717411303424}'


def test_what_only_the_stdlib_accepts_is_still_accepted() -> None:
    assert fastjson.loads(b'{"a": NaN}')["a"] != fastjson.loads(b'{"a": NaN}')["a"]  # nan != nan
    assert fastjson.loads('{"a": "utf-16"}'.encode("utf-16")) == {"a": "utf-16"}
    assert fastjson.dumps({1: "int key"}) == b'{"1":"int key"}'


@pytest.mark.parametrize("bad", [b"{", b"not json", b'{"a": 1,}', b"\xff\xfe\xfa"])
def test_invalid_json_raises_what_json_raises(bad: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(bad)
    with pytest.raises(ValueError) as theirs:
        json.loads(bad)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
