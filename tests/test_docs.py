"""The project's Markdown documents: every relative link reaches a file, and every #anchor a heading there."""
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("models/*.md"),
                    *ROOT.glob("aws_lambda/*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def heading_anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to dashes."""
    text = re.sub(r"[`*]", "", title).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    return {heading_anchor(title) for title in HEADING.findall(FENCE.sub("", path.read_text()))}


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", path.read_text()))
            if not re.match(r"^[a-z]+:", target)]


def broken_links(path: Path) -> list[str]:
    """The relative links of a document whose file is missing or whose #anchor is no heading there."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    return broken


def test_heading_anchor_follows_github():
    assert heading_anchor("Satellite / plane check") == "satellite--plane-check"
    assert heading_anchor("Operator: the inference client") == "operator-the-inference-client"
    assert heading_anchor("The outbox and `flush`") == "the-outbox-and-flush"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n[ok](#top) [gone](#nowhere) [file](b.md#top) [missing](c.md)\n")
    (tmp_path / "b.md").write_text("## Top\n")
    assert broken_links(tmp_path / "a.md") == ["#nowhere", "c.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    assert broken_links(document) == []


def test_the_readme_and_the_checks_record_link_to_each_other():
    assert "docs/CLIENT_CHECKS.md" in relative_links(ROOT / "README.md")
    assert "../README.md#operator-the-inference-client" in relative_links(ROOT / "docs" / "CLIENT_CHECKS.md")
