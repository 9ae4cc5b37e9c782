"""The README is the docs site's front page, short, and starts with the two commands."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = "python3 -m venv .venv && . .venv/bin/activate && pip install . && unlearn demo"
TESTS = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"


def test_readme_is_a_front_page_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    assert readme.index(DEMO) < readme.index(TESTS) < readme.index("## A five-minute tour")


def test_docs_index_is_the_readme_with_site_links():
    readme = (ROOT / "README.md").read_text().replace("](docs/", "](")
    readme = readme.replace(
        "The reference lives in `docs/` (a site:",
        "The reference lives in these pages (a site built from `docs/`:",
    )
    assert (ROOT / "docs" / "index.md").read_text() == readme


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, page.name
