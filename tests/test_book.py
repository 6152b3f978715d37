"""The book: every chapter executes on the smoke profile, and the built HTML renders offline in Chromium.

Both tests work in a temporary copy of the book (``_config.yml``, ``_toc.yml``, ``book/`` sources), so they never
touch the checkout's ``book/_executed/`` or ``_build/``. Each chapter is executed once per test session, with
``profile="smoke"`` and ``seeds=[0]`` (smoke results are computed once and cached); the browser test builds the
HTML from those notebooks. Select with ``-m book``, leave out with ``-m "not book"``.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bookbuild  # noqa: E402 - the build tooling lives outside the package

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = bookbuild.chapter_names(ROOT)
DOCUMENTS = bookbuild.toc_documents(ROOT)
# Each chapter gets only the names its parameters cell has. Smoke results are computed by the first chapter that
# needs them and cached under results/<experiment>/smoke-*, so later chapters reuse them.
SMOKE = {"profile": "smoke", "seeds": [0]}
CELL_TIMEOUT_S = 900

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about"}
WIDGET_STATE = 'script[type="application/vnd.jupyter.widget-state+json"]'
RENDERED_WIDGET = ".jupyter-widgets, [class*='widget-']"
# Upstream and harmless: sphinx-thebe 0.3.1 under Sphinx 7.4 writes its inline config script twice on every page,
# so the second copy fails to redeclare a const (thebe itself is off: it would load only on a launch click).
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)


class SmokeBook:
    """A temporary copy of the book whose chapters are executed on demand, each at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: dict[str, bookbuild.ChapterResult] = {}
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy2(ROOT / name, root / name)
        shutil.copytree(
            ROOT / bookbuild.SOURCE_DIR,
            root / bookbuild.SOURCE_DIR,
            ignore=shutil.ignore_patterns("_executed", "vendor", ".ipynb_checkpoints"),
        )

    def execute(self, name: str) -> bookbuild.ChapterResult:
        if name not in self.results:
            self.results[name] = bookbuild.execute_chapter(self.root, name, SMOKE, timeout=CELL_TIMEOUT_S)
        return self.results[name]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> SmokeBook:
    bookbuild.ensure_kernelspec()
    return SmokeBook(tmp_path_factory.mktemp("book"))


@pytest.mark.book
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executes_on_smoke_profile(smoke_book: SmokeBook, name: str) -> None:
    result = smoke_book.execute(name)
    assert result.status == "ok", f"chapter {name} failed: {result.error}\n  executed notebook: {result.output}"
    errors = bookbuild.error_outputs(nbformat.read(result.output, as_version=4))
    assert not errors, f"chapter {name} has error outputs: {errors}"


@pytest.mark.book
def test_a_chapter_parameter_maps_onto_the_experiment(smoke_book: SmokeBook, tmp_path: Path) -> None:
    """papermill -p forget_class 5 re-executes the class chapter for class 5 (its own cached smoke results)."""
    out = tmp_path / "mnist_class-5.ipynb"
    result = bookbuild.execute_chapter(smoke_book.root, "mnist_class", {**SMOKE, "forget_class": 5}, output=out,
                                       timeout=CELL_TIMEOUT_S)
    assert result.status == "ok", f"failed: {result.error}"
    nb = nbformat.read(out, as_version=4)
    assert not bookbuild.error_outputs(nb)
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "This execution forgets class 5" in text and "forgotten (test 5s)" in text
    assert "forgotten (test 3s)" not in text


# ----------------------------------------------------------------------------------------- the built HTML


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run this test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def site(smoke_book: SmokeBook) -> Iterator[str]:
    """Build the HTML of the smoke book and serve it on a free localhost port; yields the base URL."""
    failed = [r for r in map(smoke_book.execute, CHAPTERS) if r.status != "ok"]
    if failed:
        pytest.fail(f"chapter {failed[0].name} failed ({failed[0].error}); see {failed[0].output}")
    if not bookbuild.ensure_vendor(ROOT):
        pytest.skip("npm could not fetch MathJax/require.js/the widget manager; the HTML would need CDNs")
    (smoke_book.root / bookbuild.VENDOR_DIR).symlink_to(ROOT / bookbuild.VENDOR_DIR, target_is_directory=True)
    assert bookbuild.build_html(smoke_book.root) == 0, "jupyter-book build failed (its output is above)"
    html = smoke_book.root / bookbuild.HTML_DIR
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=html))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.book
@pytest.mark.parametrize("doc", DOCUMENTS)
def test_page_renders_offline(browser, site: str, doc: str) -> None:
    offsite: list[str] = []
    local_errors: list[str] = []
    page_errors: list[str] = []

    def route(route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    def on_response(response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            local_errors.append(f"{response.status} {response.url}")

    context = browser.new_context()
    try:
        context.route("**/*", route)
        page = context.new_page()
        page.on("response", on_response)
        page.on("pageerror", lambda err: str(err) in KNOWN_JS_ERRORS or page_errors.append(str(err)))
        response = page.goto(site + doc + ".html", wait_until="load")
        assert response is not None and response.status == 200, f"{doc}: HTTP {response and response.status}"

        if page.locator(".math").count():
            page.wait_for_selector("mjx-container", state="attached", timeout=60_000)
        elif doc == "book/_executed/intro":
            pytest.fail("the intro page should have math")
        if page.locator(WIDGET_STATE).count():
            page.wait_for_selector(RENDERED_WIDGET, state="attached", timeout=60_000)

        page.wait_for_load_state("networkidle")  # fonts and images requested by MathJax and the widgets
        page.wait_for_function("Array.from(document.images).every(img => img.complete)", timeout=30_000)
        broken = page.evaluate("Array.from(document.images).filter(img => img.naturalWidth === 0).map(img => img.src)")
        text = page.inner_text("body")
    finally:
        context.close()

    assert not broken, f"{doc}: images that did not load: {broken}"
    assert "Traceback" not in text, f"{doc}: the page shows a traceback"
    assert not offsite, f"{doc}: requests to other hosts (aborted): {offsite}"
    assert not local_errors, f"{doc}: failed requests: {local_errors}"
    assert not page_errors, f"{doc}: JavaScript errors: {page_errors}"
