"""The README stays true: route table, settings, and the exact commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.classic.routes import RouteTable
from proxy.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_route_table_in_readme_is_generated_from_the_code() -> None:
    m = re.search(r"<!-- routes:start -->\n(.*?)\n<!-- routes:end -->", README, re.S)
    assert m, "route table markers missing"
    assert m.group(1).strip() == RouteTable().render_markdown().strip(), (
        "README route table is stale: regenerate with `qiskit-classic-proxy routes --markdown`"
    )


def test_every_setting_is_documented() -> None:
    for field in Settings.model_fields:
        assert f"`QCP_{field.upper()}`" in README, field


def test_ci_runs_exactly_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_readme_install_command_starts_the_proxy_or_demo() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert any("pip install" in b and "qiskit-classic-proxy start" in b for b in blocks)
