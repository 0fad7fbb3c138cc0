"""Every rule, on its fixture file: a line ending in `expect: CODE[,CODE]` gives exactly those codes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from proxy.scan.analyzer import scan_paths
from proxy.scan.rules import BY_CODE, RULES, select_rules

RULES_DIR = Path(__file__).parent / "fixtures" / "rules"
FIXTURES = sorted(p for p in RULES_DIR.rglob("*") if p.suffix in (".py", ".sh", ".ipynb"))
_EXPECT = re.compile(r"expect: ([A-Z0-9,]+)\s*$")


def expected(path: Path) -> Counter[tuple[int, str]]:
    out: Counter[tuple[int, str]] = Counter()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        m = _EXPECT.search(line)
        if m:
            out.update((n, code) for code in m.group(1).split(","))
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=[p.relative_to(RULES_DIR).as_posix() for p in FIXTURES])
def test_fixture_file_gives_exactly_the_expected_findings(path: Path) -> None:
    result = scan_paths([path], base=RULES_DIR)
    assert not result.errors
    got = Counter((f.line, f.code) for f in result.findings)
    assert got == expected(path), "\n".join(f.location() + " " + f.code for f in result.findings)


def test_every_rule_has_a_fixture_line() -> None:
    covered = {code for p in FIXTURES for _, code in expected(p)}
    assert covered == set(BY_CODE)


def test_rule_table_is_well_formed() -> None:
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    for r in RULES:
        assert re.fullmatch(r"QCP[123]\d\d", r.code)
        assert r.message and r.fix and r.relies_on
        assert r.level in ("error", "warning", "note")


def test_select_and_ignore_by_code_and_prefix() -> None:
    assert select_rules(["QCP2"]) == {c for c in BY_CODE if c.startswith("QCP2")}
    assert "QCP201" not in select_rules(None, ["qcp201"])
    assert select_rules(["QCP1"], ["QCP105"]) == {"QCP101", "QCP102", "QCP103", "QCP104"}
    with pytest.raises(ValueError, match="QCP9"):
        select_rules(["QCP9"])
