"""proxy.classic.bodystream: the streaming top-level key filter agrees with json.loads + pop, chunk by chunk."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from proxy.classic.bodystream import (
    CAPTURE,
    KEY_MAX,
    OPAQUE,
    JsonStreamError,
    KeyFilter,
    SpooledBody,
    Spooler,
    filter_bytes,
    stream_drops,
)
from proxy.classic.routes import JOB_SUBMIT, SESSION_CREATE
from proxy.errors import BadRequest

DROP = ("hub", "group", "project", "private")


def reference(data: bytes) -> dict[str, Any]:
    """What the small-body path does: json.loads, then pop the keys."""
    doc = json.loads(data) if data.strip() else {}
    assert isinstance(doc, dict)
    for k in DROP:
        doc.pop(k, None)
    return doc


def run_chunked(data: bytes, sizes: list[int], drop: tuple[str, ...] = DROP) -> tuple[bytes, dict[str, Any]]:
    f = KeyFilter(drop)
    out = bytearray()
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out += f.feed(data[i : i + n])
        i += n
        k += 1
    out += f.close()
    return bytes(out), f.captured


def same(a: Any, b: Any) -> bool:
    # NaN != NaN: compare canonical dumps instead of values.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------------------ hand-picked


@pytest.mark.parametrize(
    "body",
    [
        b'{"hub":"h","a":1}',  # dropped key first
        b'{"a":1,"hub":"h"}',  # last
        b'{"hub":"h"}',  # only
        b'{"hub":"h","group":"g","project":"p","private":true}',  # all dropped
        b"{}",
        b"  {  }  ",
        b"",
        b" \n\t ",
        b'{"a":{"hub":1,"group":[{"project":2}]},"b":["hub","group"]}',  # nested: kept
        b'{"note":"a \\"hub\\": 1, \\"group\\"","hub":"x"}',  # key-like text in strings
        b'{"\\u0068ub":"escaped name is still hub","k":1}',
        b'{"h\\u00fcb":1,"hub ":2," hub":3,"Hub":4,"hubs":5}',  # near misses stay
        '{"ü":"é","group":"g","emoji":"𝄞"}'.encode(),
        b'{"esc":"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\ud834\\udd1e","project":null}',
        b'{ "hub" : "h" , "a" : [ 1 , 2 ] , "group" : { } , "b" : -0.5e-3 }',
        b'{"n":[0,-0,1.5,1E+10,-2e-2,123456789012345678901234567890],"t":true,"f":false,"z":null}',
        b'{"nan":NaN,"inf":Infinity,"ninf":-Infinity,"hub":NaN}',
        b'{"a":1,"a":2,"hub":1,"hub":2}',  # duplicates: last wins, like json
        b'\xef\xbb\xbf{"hub":"bom","a":1}',  # UTF-8 BOM, as json.loads accepts
        b'{"deep":[[[[[[[[[[{"hub":[[[]]]}]]]]]]]]]]}',
        b'{"":"empty key","hub":""}',
        b'{"s":"\xed\xa0\x80"}',  # a UTF-8-encoded lone surrogate: json.loads(bytes) accepts it
    ],
)
def test_filter_matches_json_loads_and_pop(body: bytes) -> None:
    expected = reference(body.removeprefix(b"\xef\xbb\xbf"))
    for sizes in ([len(body) or 1], [1], [2, 3], [7, 1, 13]):
        out, _ = run_chunked(body, sizes)
        assert same(json.loads(out), expected), (body, sizes, out)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,}',
        b'{,"a":1}',
        b'{"a" 1}',
        b'{"a":}',
        b'{"a"::1}',
        b"[1,2]",
        b'"just a string"',
        b"42",
        b"null",
        b'{"a":tru}',
        b'{"a":True}',
        b'{"a":01}',
        b'{"a":1.}',
        b'{"a":.5}',
        b'{"a":+1}',
        b'{"a":0x10}',
        b'{"a":"\x01"}',
        b'{"a":"line\nbreak"}',
        b'{"a":"\\x41"}',
        b'{"a":"\\u12"}',
        b'{"a":"\\u12G4"}',
        b'{"a":1}x',
        b'{"a":1}{"b":2}',
        b'{"a":1}}',
        b'{"a":[1,2}',
        b'{"a":{"b":1]}',
        b'{"a":1',
        b'{"a":"unterminated',
        b'{"a":"\\',
        b"{",
        b'{"hub":"x",}',
        b'{"a":1 "b":2}',
        b"\xff\xfe{}",
        b'{"a":"\xc3\x28"}',  # invalid UTF-8
        b"{'a':1}",
        b"{a:1}",
    ],
)
def test_invalid_json_is_refused_like_json_loads(body: bytes) -> None:
    with pytest.raises((ValueError, UnicodeDecodeError)):
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    for sizes in ([len(body)], [1], [3]):
        with pytest.raises(JsonStreamError):
            run_chunked(body, sizes)


def test_error_reports_the_byte_offset() -> None:
    with pytest.raises(JsonStreamError) as e:
        run_chunked(b'{"a":[1,2,3],"b":tru}', [4])
    assert e.value.pos == 17


def test_captured_values() -> None:
    body = b'{"hub":"ibm-q","group":"open","project":"main","program_id":"sampler","instance":null,"x":1}'
    out, cap = filter_bytes(body, DROP)
    assert json.loads(out) == {"program_id": "sampler", "instance": None, "x": 1}
    assert cap == {"hub": "ibm-q", "group": "open", "project": "main", "program_id": "sampler", "instance": None}


def test_large_captured_value_is_opaque_not_a_string() -> None:
    big = "x" * 10_000
    out, cap = filter_bytes(json.dumps({"hub": big, "program_id": {"nested": [1, 2]}}).encode(), DROP)
    assert cap["hub"] is OPAQUE and not isinstance(cap["hub"], str)
    assert cap["program_id"] == {"nested": [1, 2]}
    assert json.loads(out) == {"program_id": {"nested": [1, 2]}}


def test_only_top_level_keys_are_captured() -> None:
    _, cap = filter_bytes(b'{"params":{"hub":"inner","program_id":"inner"}}', DROP)
    assert cap == {}


def test_long_keys_stream_through_and_are_never_dropped() -> None:
    long_key = "hub" + "x" * (3 * KEY_MAX)
    body = json.dumps({long_key: 1, "hub": 2, "k" * (KEY_MAX + 1): 3}).encode()
    for sizes in ([len(body)], [5], [KEY_MAX // 3]):
        out, _ = run_chunked(body, sizes)
        assert json.loads(out) == {long_key: 1, "k" * (KEY_MAX + 1): 3}


def test_huge_string_values_and_keys_are_not_held_in_memory() -> None:
    # A 4 MB string crosses many chunks; the filter keeps only a few bytes between feeds.
    payload = "A" * (4 * 1024 * 1024)
    body = json.dumps({"hub": payload, "data": payload}).encode()
    f = KeyFilter(DROP)
    out = bytearray()
    for i in range(0, len(body), 65536):
        out += f.feed(body[i : i + 65536])
        assert len(f._tail) < 16
    out += f.close()
    assert json.loads(out) == {"data": payload}
    assert f.captured["hub"] is OPAQUE


def test_number_split_across_chunks() -> None:
    body = b'{"a":12345678901234567890,"b":-1.25e+10,"hub":true}'
    for cut in range(1, len(body)):
        out, _ = run_chunked(body, [cut, len(body)])
        assert json.loads(out) == {"a": 12345678901234567890, "b": -1.25e10}


def test_absurdly_long_number_is_refused() -> None:
    with pytest.raises(JsonStreamError):
        run_chunked(b'{"a":' + b"1" * 200_000 + b"}", [65536])


# ------------------------------------------------------------------------ property-style


def _value(r: random.Random, depth: int) -> Any:
    t = r.random()
    if depth > 4 or t < 0.45:
        return r.choice(
            [
                0,
                1,
                -7,
                2.5,
                -1e-9,
                1e300,
                10**25,
                True,
                False,
                None,
                "",
                "hub",
                '"hub": 1,',
                "\\",
                "ü€𝄞",
                "\x7f\n\t",
                "x" * r.randint(0, 400),
            ]
        )
    if t < 0.72:
        return [_value(r, depth + 1) for _ in range(r.randint(0, 6))]
    return {r.choice(KEYS): _value(r, depth + 1) for _ in range(r.randint(0, 5))}


KEYS = ["hub", "group", "project", "private", "program_id", "instance", "a", "b", 'h"ub', "hub\\", "ü", "hubs", ""]


def _dump(r: random.Random, v: Any) -> str:
    def ws() -> str:
        return r.choice(["", "", " ", "\n  ", "\t", "\r\n"])

    if isinstance(v, dict):
        members = [f"{ws()}{_key(r, k)}{ws()}:{ws()}{_dump(r, x)}{ws()}" for k, x in v.items()]
        return "{" + ",".join(members) + ws() + "}"
    if isinstance(v, list):
        return "[" + ws() + ",".join(ws() + _dump(r, x) + ws() for x in v) + "]"
    return json.dumps(v, ensure_ascii=r.random() < 0.5)


def _key(r: random.Random, k: str) -> str:
    if k == "hub" and r.random() < 0.3:
        return '"\\u0068ub"'
    return json.dumps(k, ensure_ascii=r.random() < 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_match_json(seed: int) -> None:
    r = random.Random(seed)
    for _ in range(400):
        doc = {r.choice(KEYS): _value(r, 1) for _ in range(r.randint(0, 8))}
        data = _dump(r, doc).encode()
        sizes = [r.choice([1, 2, 3, 5, 64, 4096, 1 << 20]) for _ in range(5)]
        out, cap = run_chunked(data, sizes)
        expected = json.loads(data)
        assert same(cap, {k: expected[k] for k in CAPTURE if k in expected})
        for k in DROP:
            expected.pop(k, None)
        assert same(json.loads(out), expected), data


@pytest.mark.parametrize("seed", range(4))
def test_random_corruptions_are_judged_like_json(seed: int) -> None:
    """Flip, drop or insert bytes: the filter accepts exactly what json.loads accepts as an object."""
    r = random.Random(1000 + seed)
    for _ in range(400):
        doc = {r.choice(KEYS): _value(r, 1) for _ in range(r.randint(1, 6))}
        b = bytearray(_dump(r, doc).encode())
        for _ in range(r.randint(1, 3)):
            p = r.randrange(len(b))
            op = r.random()
            if op < 0.4:
                del b[p]
            elif op < 0.8:
                b.insert(p, r.choice(b'{}[]",:\\ 0-.eE1tnfu\x01\xff'))
            else:
                b[p : p + 1] = b'"hub":1,'
        data = bytes(b)
        try:
            expected: Any = json.loads(data)
            if not isinstance(expected, dict):
                expected = None
        except (ValueError, UnicodeDecodeError):
            expected = None
        if not data.strip():
            expected = {}
        try:
            out, _ = run_chunked(data, [r.choice([1, 7, 100, 1 << 20])])
            got: Any = json.loads(out)
        except JsonStreamError:
            got = None
        if expected is not None:
            for k in DROP:
                expected.pop(k, None)
        assert same(got, expected), data


# --------------------------------------------------------------------------- spooler glue


def test_stream_drops_only_for_plain_drop_ops() -> None:
    assert stream_drops(tuple(JOB_SUBMIT)) == frozenset(DROP)
    assert stream_drops(()) == frozenset()
    assert stream_drops(tuple(SESSION_CREATE)) is None  # renames/defaults need the parsed document


def test_spooler_small_body_stays_in_memory_bytes() -> None:
    s = Spooler(DROP, threshold=1024)
    s.add(b'{"hub":"h",')
    s.add(b'"a":1}')
    assert s.finish() == b'{"hub":"h","a":1}'


def test_spooler_large_body_is_filtered_into_a_replayable_spool() -> None:
    payload = "z" * 5000
    body = json.dumps({"hub": "ibm-q", "group": "open", "project": "main", "params": payload}).encode()
    s = Spooler(DROP, threshold=1024)
    for i in range(0, len(body), 333):
        s.add(body[i : i + 333])
    spooled = s.finish()
    assert isinstance(spooled, SpooledBody)
    assert spooled.captured == {"hub": "ibm-q", "group": "open", "project": "main"}

    async def collect() -> bytes:
        return b"".join([c async for c in spooled.stream(chunk_size=1000)])

    first = asyncio.run(collect())
    again = asyncio.run(collect())  # the 401 replay reads it a second time
    assert first == again == b'{"params": "' + payload.encode() + b'"}'  # kept members keep their bytes
    assert spooled.size == len(first)
    spooled.close()


def test_spooler_invalid_large_body_is_a_400() -> None:
    s = Spooler(DROP, threshold=16)
    s.add(b'{"a":"' + b"x" * 100 + b'",')
    with pytest.raises(BadRequest) as e:
        s.add(b"]")
    assert e.value.status == 400 and e.value.code == "invalid_json"
    s2 = Spooler(DROP, threshold=16)
    s2.add(b'{"a":"' + b"x" * 100 + b'"')
    with pytest.raises(BadRequest):
        s2.finish()
