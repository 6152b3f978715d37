"""The book is published as a site: the GitHub Pages workflow parses, builds with the README's own book command and
deploys the directory that command writes."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import bookbuild  # noqa: E402 - the build tooling lives outside the package

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _readme_book_command() -> str:
    """The README's build command: the line of its "Two commands" block that builds the book."""
    block = re.search(r"### Two commands\s+```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README has no 'Two commands' block"
    lines = [ln.split("#")[0].strip() for ln in block[1].splitlines()]
    book = [ln for ln in lines if ln.endswith("book")]
    assert len(book) == 1, lines
    return book[0]


def test_the_pages_workflow_builds_with_the_readmes_command_and_deploys_the_html():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow.get(True, flow.get("on"))  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert flow["permissions"]["pages"] == "write" and flow["permissions"]["id-token"] == "write"
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    runs = [s["run"].strip() for s in build["steps"] if "run" in s]
    assert _readme_book_command() in runs  # the README's command, not a copy of what it does
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == bookbuild.HTML_DIR  # where that command writes the site
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])


def test_the_readme_says_where_the_book_is_published_and_how_to_serve_a_local_copy():
    text = (ROOT / "README.md").read_text()
    assert ".github/workflows/book.yml" in text and "GitHub Pages" in text
    assert f"python -m http.server -d {bookbuild.HTML_DIR}" in text
