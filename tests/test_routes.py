"""The route table: coverage of the guide, matching, path hygiene."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.classic.routes import ROUTES, Forward, Gone, RouteTable, normalize
from proxy.errors import BadRequest, MethodNotAllowed, NotFound

#: IBM's migration guide as text (source named in tests/data/README.md): in the repository, so this
#: test runs on every clone instead of skipping where a reference folder is absent.
GUIDE = Path(__file__).resolve().parent / "data" / "migration-guide.txt"

table = RouteTable()


def guide_rows() -> set[tuple[str, str]]:
    """(METHOD, classic path) for every row of the guide's tables, with merged cells split."""
    text = GUIDE.read_text()
    rows: set[tuple[str, str]] = set()
    for line in text.splitlines():
        m = re.match(r"^\| (GET|POST|PUT|PATCH|DELETE) \| ([^|]+) \|", line)
        if not m:
            continue
        method, cell = m.group(1), m.group(2).strip().replace("\\{", "{").replace("\\}", "}")
        # Merged cells like "/jobs*/jobs/{id}/jobs/{id}/metrics": split before each new leading segment.
        cell = cell.replace("*", "")
        parts = re.split(r"(?<!/v1)(?=/(?:jobs|sessions)(?:/|$))", cell)
        for p in parts:
            if p.strip():
                rows.add((method, p.strip().replace("{name}", "{x}").replace("{id}", "{x}")))
    return rows


def _key(template: str) -> str:
    return re.sub(r"{\w+}", "{x}", template)


def test_every_guide_row_has_a_route() -> None:
    ours = {(r.method, _key(r.template)) for r in ROUTES}
    missing = guide_rows() - ours
    assert not missing, f"guide rows without a route: {sorted(missing)}"
    assert len(guide_rows()) >= 30


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("POST", "/auth/validate"),
        ("GET", "/facade/v1/jobs/{job_id}/type"),
        ("GET", "/sessions/{session_id}/extended"),
        ("GET", "/usage"),
    ],
)
def test_removed_endpoints_are_gone(method: str, path: str) -> None:
    route = next(r for r in ROUTES if r.method == method and r.template == path)
    assert isinstance(route.action, Gone)


def test_forward_targets_are_all_under_v1() -> None:
    for r in ROUTES:
        if isinstance(r.action, Forward):
            assert r.action.path.startswith("/v1/"), r.key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/runtime/jobs", "/jobs"),
        ("/api/users/me", "/users/me"),
        ("/jobs/", "/jobs"),
        ("/runtime/backends/", "/backends"),
        ("/api", "/"),
        ("/apix/jobs", "/apix/jobs"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/jobs/../users/me", None),
        ("/jobs/./x", None),
        ("/jobs//x", None),
        ("/jobs/a\\b", None),
        ("/jobs/a/b", b"/jobs/a%2Fb"),
        ("/jobs/..", b"/jobs/%2e%2e"),
        ("/jobs/\x00", None),
    ],
)
def test_path_smuggling_is_refused(path: str, raw: bytes | None) -> None:
    with pytest.raises(BadRequest):
        normalize(path, raw)


def test_match_validates_path_parameters() -> None:
    assert table.match("GET", "/jobs/cabc-123_x").params == {"job_id": "cabc-123_x"}
    with pytest.raises(BadRequest):
        table.match("GET", "/jobs/a$b")
    with pytest.raises(BadRequest):
        table.match("GET", "/backends/-x/status")
    long_id = "a" * 129
    with pytest.raises(BadRequest):
        table.match("GET", f"/jobs/{long_id}")


def test_upstream_path_is_built_from_the_template_only() -> None:
    m = table.match("GET", "/backends/ibm_fez/properties")
    assert m.route.upstream_path(m.params) == "/v1/backends/ibm_fez/properties"


def test_unknown_and_wrong_method() -> None:
    with pytest.raises(NotFound):
        table.match("GET", "/nope")
    with pytest.raises(MethodNotAllowed) as info:
        table.match("POST", "/backends")
    assert info.value.headers["allow"] == "GET"
    with pytest.raises(MethodNotAllowed):
        table.match("PATCH", "/jobs/abc")


def test_route_keys_are_unique_and_rendered() -> None:
    keys = [r.key for r in ROUTES]
    assert len(keys) == len(set(keys))
    text = table.render_table()
    md = table.render_markdown()
    for r in ROUTES:
        assert r.template in text
        assert f"`{r.template}`" in md


def test_duplicate_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([ROUTES[0], ROUTES[0]])
