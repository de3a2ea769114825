"""The README and docs/ agree with the code: links, settings names, make targets, length."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Where a setting can be read or set: the code, the stack's scripts and the deployment files.
CODE = [
    *ROOT.glob("common/**/*.py"),
    *ROOT.glob("*_svc/**/*.py"),
    *ROOT.glob("scripts/*"),
    ROOT / "Makefile",
    ROOT / "compose.yaml",
    *ROOT.glob("deploy/**/*"),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
SETTING = re.compile(r"\bSAGA_[A-Z0-9_]*[A-Z0-9]\b")
MAKE = re.compile(r"`make ([a-z][a-z-]*)")


def _code_text() -> str:
    return "\n".join(p.read_text(errors="replace") for p in CODE if p.is_file())


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    inside_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        if inside_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_readme_is_for_a_newcomer():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300, "README.md over 300 lines: move depth into docs/"
    assert "make demo" in readme
    assert "make test" in readme
    linked = {m for m in LINK.findall(readme) if m.startswith("docs/") and m.endswith(".md")}
    assert len(linked) >= 3, linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        missing_anchor = dest.exists() and anchor and dest.suffix == ".md" and anchor not in _anchors(dest)
        if not dest.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_settings_named_exist_in_the_code(page: Path):
    code = _code_text()
    unknown = sorted({name for name in SETTING.findall(page.read_text()) if name not in code})
    assert not unknown, f"{page.name} names settings no code reads: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_make_targets_named_exist(page: Path):
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    unknown = sorted(set(MAKE.findall(page.read_text())) - targets)
    assert not unknown, f"{page.name} names make targets the Makefile lacks: {unknown}"
