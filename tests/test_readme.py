"""The README stays true: route table, settings, the exact commands CI runs; the docs stand alone
(every link resolves inside the repository); the package metadata a user checks before adopting it.
The README's commands themselves run in tests/test_readme_commands.py."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import metadata
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


def _tracked_markdown() -> list[Path]:
    """Every *.md a clone has (git's list; without git, the tree minus venvs and caches)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "*.md"], capture_output=True, check=True, timeout=20
        ).stdout.decode()
        files = [ROOT / n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in ROOT.rglob("*.md") if not {".venv", ".git", "node_modules"} & set(p.parts)]
    assert any(f.name == "README.md" for f in files)
    return files


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1 -2 for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _without_code_blocks(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\[[^\]]+\]:\s*(\S+)", re.M)


def test_docs_stand_alone_no_link_leaves_the_repository() -> None:
    """Regression (#13): README.md and tests/legacy/README.md sent readers to ../shared/..., which a
    user's clone does not have. No tracked doc names ../shared, and every relative link (and #anchor)
    resolves to a file in the repository."""
    root = ROOT.resolve()
    broken = []
    for doc in _tracked_markdown():
        text = doc.read_text()
        rel = doc.relative_to(ROOT)
        if "../shared" in text:
            broken.append(f"{rel}: mentions ../shared (not in a clone; use tests/data/ or a public URL)")
        for m in LINK.finditer(_without_code_blocks(text)):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-zA-Z][\w+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc.resolve()
            if not dest.is_relative_to(root):
                broken.append(f"{rel}: {target} points outside the repository")
            elif not dest.exists():
                broken.append(f"{rel}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{rel}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    assert not broken, "\n".join(broken)


def test_package_metadata_has_urls_and_classifiers() -> None:
    """What a user checks before adopting a tool (#13): where the code, issues and changelog live, the
    license and Python versions. Read from the installed distribution (`pip install -e .` built it)."""
    meta = metadata("qiskit-classic-proxy")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values()), urls
    assert urls["Changelog"].endswith("/CHANGELOG.md") and (ROOT / "CHANGELOG.md").exists()
    classifiers = set(meta.get_all("Classifier") or [])
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert "Framework :: FastAPI" in classifiers
    assert {"Programming Language :: Python :: 3.10", "Programming Language :: Python :: 3.11"} <= classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert meta["Keywords"] and "qiskit" in meta["Keywords"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_changelog_keeps_a_changelog() -> None:
    """Keep a Changelog: an Unreleased section, then versions with dates; this version is listed."""
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert versions and versions[0][0] == "Unreleased", versions
    assert (metadata("qiskit-classic-proxy")["Version"], ) in {(v,) for v, _ in versions}
    assert all(date for v, date in versions[1:]), versions
