"""The docs stay navigable: every relative link and anchor in README, CHANGELOG, docs/ and
bench/RESULTS.md resolves, and README stays a front page within its line budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_BUDGET = 250  # lines: README is a researcher's front page; the manual lives under docs/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def doc_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "bench" / "RESULTS.md"]
    return files + sorted((REPO / "docs").rglob("*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == [], f"{path.relative_to(REPO)} has broken links"


def test_the_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# A title\n\n## Second `part`\n[ok](#second-part) [f](b.md#x) [g](#nope)\n")
    (tmp_path / "b.md").write_text("# Y\n")
    assert broken_links(tmp_path / "a.md") == ["b.md#x (no heading #x in b.md)", "#nope (no heading #nope in a.md)"]
    (tmp_path / "a.md").write_text("[gone](c.md)\n")
    assert broken_links(tmp_path / "a.md") == ["c.md (no such file)"]


def test_readme_is_a_front_page_within_its_budget():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_BUDGET, f"README.md has {lines} lines; move detail to docs/ (budget {README_BUDGET})"


def test_every_shipped_sweep_config_opens_with_the_command_that_runs_it():
    for path in sorted((REPO / "sweeps" / "configs").glob("*.yaml")):
        head = path.read_text().splitlines()[0]
        assert head.startswith("# ") and ("ltvl sweep run" in head or "sweeps/" in head), \
            f"{path.name} should open with a comment naming the command that runs it"


@pytest.mark.parametrize("name", ["parameters.md", "sweep-config.md", "cli.md"])
def test_each_reference_page_regenerates_to_itself(name):
    from ltvl.reference import PAGES

    on_disk = (REPO / "docs" / "reference" / name).read_text()
    assert on_disk == PAGES[name](), f"docs/reference/{name} is stale: run `python -m ltvl.reference`"


def test_a_sweep_key_without_a_line_is_an_error(monkeypatch):
    from ltvl.plan import config
    from ltvl.reference import render_sweep_config

    monkeypatch.setattr(config, "KEY_DOCS", {k: v for k, v in config.KEY_DOCS.items() if k != "keep"})
    with pytest.raises(KeyError, match="'keep'"):
        render_sweep_config()
