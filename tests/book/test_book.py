"""The book: every chapter executes on the smoke profile, and the built HTML renders offline in Chromium.

Both tests work in a temporary copy of the book (``_config.yml``, ``_toc.yml``, ``book/`` sources), so they never
touch the checkout's ``book/_executed/`` or ``_build/``. Each chapter is executed once per test session, with
``profile="smoke"`` and ``seeds=[0]`` (smoke results are computed once and cached); the browser test builds the
HTML from those notebooks. Select with ``-m book``, leave out with ``-m "not book"``.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bookbuild  # noqa: E402 - the build tooling lives outside the package

ROOT = Path(__file__).resolve().parents[2]
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
            ignore=shutil.ignore_patterns("_executed", "vendor", "_panel_data", ".ipynb_checkpoints"),
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


def _local_only(context) -> list[str]:
    """Abort every request of ``context`` to another host; returns the list the aborted URLs are added to."""
    offsite: list[str] = []

    def route(route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return offsite


@pytest.mark.book
@pytest.mark.parametrize("doc", DOCUMENTS)
def test_page_renders_offline(browser, site: str, doc: str) -> None:
    local_errors: list[str] = []
    page_errors: list[str] = []

    def on_response(response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            local_errors.append(f"{response.status} {response.url}")

    context = browser.new_context()
    try:
        offsite = _local_only(context)
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


# ------------------------------------------------------------------------------ the browser panel, computing live

PANEL = ".amnesiac-forget-panel"


def _offline_page(browser, site: str, doc: str, **context_args):
    """A page of the built book with every request to another host aborted (listed in ``offsite``); JavaScript
    errors and failed local requests are listed in ``errors``."""
    context = browser.new_context(**context_args)
    offsite = _local_only(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: str(err) in KNOWN_JS_ERRORS or errors.append(str(err)))
    page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")
            and errors.append(f"HTTP {r.status} {r.url}"))
    page.goto(site + doc + ".html", wait_until="load")
    page.wait_for_function(f"document.querySelector('{PANEL}')?.dataset.updates >= 1", timeout=120_000)
    return context, page, offsite, errors


def _settled(page, before: int) -> dict:
    """Wait until the panel has finished at least one update after ``before`` and none is pending; its state."""
    page.wait_for_function(
        f"(() => {{ const p = document.querySelector('{PANEL}').amnesiacPanel;"
        f" return p.updates > {before} && p.busy === null && !p.dirty; }})()", timeout=60_000)
    return page.evaluate(f"document.querySelector('{PANEL}').amnesiacPanel.state")


def _updates(page) -> int:
    return page.evaluate(f"document.querySelector('{PANEL}').amnesiacPanel.updates")


def _compare(state: dict, data, wp) -> None:
    """The page's numbers against panel_reference on the same choice (accuracies to 1e-3, predicted labels equal
    unless the two largest logits tie within 1e-4)."""
    ref = wp.panel_reference(data, forget_class=state["forget_class"], selected=state["selected"], alpha=state["alpha"])
    for key in ("per_class_before", "per_class_after"):
        for got, want in zip(state[key], ref[key]):
            assert got == pytest.approx(want, abs=1e-3), (key, state["forget_class"], state["alpha"])
    for key in ("acc_forgotten_after", "acc_rest_before", "acc_rest_after"):
        if ref[key] == ref[key]:  # not NaN
            assert state[key] == pytest.approx(ref[key], abs=1e-3), key
        else:
            assert state[key] is None or state[key] != state[key], key
    logits = ref["logits_after"]
    n = data.n_test
    by_id = {s["id"]: k for k, s in enumerate(data.meta["samples"])}
    for got, want in zip(state["samples"], ref["samples"]):
        assert (got["id"], got["label"], got["in_class_delta"]) == (want["id"], want["label"], want["in_class_delta"])
        row = logits[n + by_id[got["id"]]]
        top2 = row.topk(2).values
        if float(top2[0] - top2[1]) > 1e-4:  # no tie within 1e-4: the labels must agree
            assert got["pred_after"] == want["pred_after"], got
        assert got["p_label_after"] == pytest.approx(want["p_label_after"], abs=1e-3)


@pytest.mark.book
def test_the_browser_panel_recomputes_offline_and_matches_python(browser, site: str, smoke_book: SmokeBook) -> None:
    from amnesiac_paper import webpanel as wp

    folder = smoke_book.root / bookbuild.PANEL_DATA_DIR / "forget-panel"
    data = wp.load_panel(folder)
    assert data.n_test >= 500 and data.meta["data_bytes"] <= wp.MAX_BYTES
    context, page, offsite, errors = _offline_page(browser, site, "book/_executed/interactive")
    try:
        states = [_settled(page, 0)]
        initial = data.meta["initial"]
        assert (states[0]["forget_class"], states[0]["selected"]) == (initial["forget_class"], initial["selected"])
        ids = [s["id"] for s in data.meta["samples"]]
        # the class: another one, by the select element
        n = _updates(page)
        page.select_option(f"{PANEL} select", str((initial["forget_class"] + 4) % 10))
        states.append(_settled(page, n))
        # images: clear, then tick two with the keyboard (Tab to the box, Space)
        n = _updates(page)
        page.click(f"{PANEL} button:has-text('clear')")
        states.append(_settled(page, n))
        for k in (1, len(ids) - 1):
            n = _updates(page)
            page.focus(f"{PANEL} input[type=checkbox][value='{ids[k]}']")
            page.keyboard.press("Space")
            states.append(_settled(page, n))
        assert states[-1]["selected"] == [ids[1], ids[-1]]
        # alpha: typed, then moved on the slider with the arrow keys
        n = _updates(page)
        page.fill(f"{PANEL} input[type=number]", "0.5")
        page.press(f"{PANEL} input[type=number]", "Enter")
        states.append(_settled(page, n))
        assert states[-1]["alpha"] == 0.5
        n = _updates(page)
        page.focus(f"{PANEL} input[type=range]")
        page.keyboard.press("ArrowLeft")
        states.append(_settled(page, n))
        assert states[-1]["alpha"] == pytest.approx(10 ** -0.35, rel=1e-3)
        # no class: the rest is the whole test set
        n = _updates(page)
        page.select_option(f"{PANEL} select", "")
        states.append(_settled(page, n))
        assert states[-1]["forget_class"] is None
        # the chapter's own values: drive the page to each of its choices and compare
        for check in json.loads((folder / "checks.json").read_text()):
            n = _updates(page)
            page.evaluate(f"(() => {{ const p = document.querySelector('{PANEL}').amnesiacPanel;"
                          f" p.setControls({json.dumps(check['forget_class'])}, {json.dumps(check['selected'])},"
                          f" {check['alpha']}); p.changed(); }})()")
            got = _settled(page, n)
            assert (got["forget_class"], got["selected"], got["alpha"]) == (
                check["forget_class"], sorted(check["selected"], key=ids.index), check["alpha"])
            for a, b in zip(got["per_class_after"], check["per_class_after"]):
                assert a == pytest.approx(b, abs=1e-3)
            states.append(got)  # its labels are compared below, ties within 1e-4 allowed
        for state in states:
            _compare(state, data, wp)
        js_logits = page.evaluate(f"Array.from(document.querySelector('{PANEL}').amnesiacPanel.lastLogits)")
        last = states[-1]
        ref = wp.panel_reference(data, forget_class=last["forget_class"], selected=last["selected"],
                                 alpha=last["alpha"])
        gap = float((ref["logits_after"].flatten() - __import__("torch").tensor(js_logits)).abs().max())
        assert gap < 1e-3, f"the page's logits differ from PyTorch's by {gap}"
        times = page.evaluate(f"document.querySelector('{PANEL}').amnesiacPanel.times")
        text = page.inner_text(PANEL)
        assert "Computing in this browser" in text and "could not start" not in text
        # the themes: the panel's text follows the page's colour; the bars keep the book's matplotlib colours
        colors = []
        for theme in ("light", "dark"):
            page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            colors.append(page.evaluate(f"getComputedStyle(document.querySelector('{PANEL} .afp-summary')).color"))
        assert colors[0] != colors[1], "the panel's text colour does not follow the theme"
        fills = set(page.evaluate(f"Array.from(document.querySelectorAll('{PANEL} svg rect')).map(r => "
                                  "r.getAttribute('fill'))"))
        assert {data.meta["colors"]["before"], data.meta["colors"]["after"]} <= fills
    finally:
        context.close()
    assert not offsite, f"requests to other hosts: {offsite}"
    assert not errors, f"JavaScript errors or failed requests: {errors}"
    times.sort()
    print(f"\nbrowser panel: {len(times)} updates, median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s; "
          f"data {data.meta['data_bytes'] / 1e6:.2f} MB; largest logit difference to PyTorch {gap:.2e}")


@pytest.mark.book
def test_the_browser_panel_fits_a_narrow_screen(browser, site: str) -> None:
    context, page, offsite, errors = _offline_page(browser, site, "book/_executed/interactive",
                                                   viewport={"width": 360, "height": 740})
    try:
        overflow = page.evaluate(f"(() => {{ const p = document.querySelector('{PANEL}');"
                                 " return p.scrollWidth - p.clientWidth; })()")
    finally:
        context.close()
    assert overflow <= 1, f"the panel is {overflow} px wider than a 360 px screen allows"
    assert not offsite and not errors
