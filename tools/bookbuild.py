"""Build the book: execute every chapter with papermill, then build the HTML with Jupyter Book 1.

The chapters are the ``_toc.yml`` entries under ``book/_executed/``, in toc order. For a chapter ``NAME`` the
jupytext source ``book/NAME.md`` (a MyST-markdown notebook) is read with jupytext and executed by papermill,
with ``book/`` as the working directory, into ``book/_executed/NAME.ipynb`` (git-ignored). Jupyter Book never
executes anything (``execute_notebooks: 'off'``): it renders the executed notebooks as they are, widget state
included. Unless ``--no-html`` is given, :func:`ensure_vendor` then makes sure local copies of MathJax,
require.js and the widget manager are in ``book/vendor/`` (fetched once with npm) and
``jupyter-book build . --path-output .`` writes the site to ``_build/html``.

Parameters come from ``$AMNESIAC_BOOK_PARAMS`` (a JSON object of defaults) and ``-p NAME VALUE`` (values are
Python literals, else strings). A chapter receives only the names its ``parameters`` cell defines; the others
are reported and left out (papermill itself would only warn).

Usage::

    python tools/bookbuild.py                      # every chapter, then the HTML
    python tools/bookbuild.py --only mnist_class -p profile smoke -p recompute True
    python tools/bookbuild.py --no-html --timeout 600
    AMNESIAC_BOOK_PARAMS='{"profile": "smoke"}' python tools/bookbuild.py

Example:
    >>> parse_value("[0, 1]"), parse_value("True"), parse_value("smoke")
    ([0, 1], True, 'smoke')
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SOURCE_DIR = "book"
EXECUTED_DIR = "book/_executed"
VENDOR_DIR = "book/vendor"
HTML_DIR = "_build/html"
# Where the interactive chapter exports the browser panel's data (served as _static/forget-panel/).
PANEL_DATA_DIR = "book/_panel_data"
PARAMS_ENV = "AMNESIAC_BOOK_PARAMS"
KERNEL_NAME = "python3"

# The widget manager goes in an npm-like tree under npm/: its AMD modules find their fonts relative to
# require.js's baseUrl + their module id: @jupyter-widgets/html-manager/dist/ for the manager, and
# @jupyter-widgets/ for the bundled base and controls modules (which get a copy of the same fonts).
WIDGET_ASSETS = "npm/@jupyter-widgets/html-manager/dist"
WIDGET_ASSET_COPY = "npm/@jupyter-widgets"
_ASSET_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")
# The browser panel's model runtime (ONNX Runtime Web, WebAssembly with SIMD, one thread: no server headers
# needed): the loader script, its module and the WebAssembly binary, served from _static/onnxruntime-web/.
ORT_DIR = "onnxruntime-web"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# npm package -> what to copy from its tarball (paths under "package/") into which vendor subfolder.
VENDOR_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "mathjax@3.2.2": (("es5", "mathjax"),),
    "requirejs@2.3.8": (("require.js", "requirejs/require.js"),),
    "@jupyter-widgets/html-manager@1.0.15": (("dist", WIDGET_ASSETS),),
    "onnxruntime-web@1.23.2": tuple((f"dist/{name}", f"{ORT_DIR}/{name}") for name in ORT_FILES),
}
# Loaded before require.js: sets its baseUrl to the npm/ folder beside this script, wherever the page is.
REQUIREJS_CONFIG = (
    "// Written by tools/bookbuild.py: require.js reads this object as its configuration.\n"
    'var require = { baseUrl: new URL("../npm/", document.currentScript.src).href };\n'
)
# Files whose presence means the vendor folder is complete (relative to book/vendor/).
VENDOR_REQUIRED = (
    "mathjax/tex-chtml.js",
    "mathjax/output/chtml/fonts/woff-v2",
    "requirejs/config.js",
    "requirejs/require.js",
    f"{WIDGET_ASSETS}/embed-amd.js",
    *(f"{ORT_DIR}/{name}" for name in ORT_FILES),
)
# Written last into book/vendor/: which packages, in which layout (a change here triggers a new fetch).
VENDOR_MANIFEST = "VERSIONS.txt"
_MANIFEST_TEXT = "layout 3\n" + "".join(f"{spec}\n" for spec in VENDOR_PACKAGES)
# Copied from html-manager's dist/ only what embed-amd.js needs (it is self-contained apart from its fonts).
_SKIP_SUFFIXES = (".map",)
_SKIP_NAMES = ("embed.js", "libembed-amd.js")
# The sphinx settings that point the HTML at book/vendor/; dropped to fall back to the CDN defaults.
_VENDOR_SETTINGS = ("html_static_path", "mathjax_path", "nb_ipywidgets_js")


class BookBuildError(RuntimeError):
    """The book cannot be built as asked (bad chapter name, missing executed notebook, ...)."""


@dataclass
class ChapterResult:
    """Outcome of one chapter in a build.

    ``status``: ``ok`` or ``failed`` (executed now), ``not run`` (after a failure), ``kept`` or ``missing``
    (not selected by ``--only``: its executed notebook from an earlier build exists, or does not).
    """

    name: str
    status: str
    seconds: float = 0.0
    output: Path | None = None
    error: str | None = None
    ignored: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- chapters


def find_root(start: Path | None = None) -> Path:
    """The book root: the first of ``start`` (default: the working directory) and its parents with a
    ``_toc.yml``, else the folder above this package if it has one."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    beside = Path(__file__).resolve().parent.parent
    if (beside / "_toc.yml").is_file():
        return beside
    raise BookBuildError(f"no _toc.yml in {start} or its parents (run from the repository root)")


def _toc_files(entry: Any) -> Iterator[str]:
    """Every ``root``/``file`` value of a ``_toc.yml`` tree, in document order."""
    if isinstance(entry, Mapping):
        for key in ("root", "file"):
            if isinstance(entry.get(key), str):
                yield entry[key]
        for key in ("parts", "chapters", "sections"):
            yield from _toc_files(entry.get(key) or [])
    elif isinstance(entry, list):
        for item in entry:
            yield from _toc_files(item)


def toc_documents(root: Path) -> list[str]:
    """Every document of ``root/_toc.yml`` in order, as written there (``book/_executed/intro``, ...)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf8"))
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb") else f for f in _toc_files(toc)]


def chapter_names(root: Path) -> list[str]:
    """Names of the executed chapters listed in ``root/_toc.yml`` (entries under ``book/_executed/``)."""
    prefix = EXECUTED_DIR + "/"
    names = [Path(f).name for f in toc_documents(root) if f.startswith(prefix)]
    if not names:
        raise BookBuildError(f"{root / '_toc.yml'} lists no chapter under {prefix}")
    return names


def source_path(root: Path, name: str) -> Path:
    """The jupytext source of a chapter: ``book/<name>.md``."""
    return root / SOURCE_DIR / f"{name}.md"


def executed_path(root: Path, name: str) -> Path:
    """Where the executed notebook of a chapter is written: ``book/_executed/<name>.ipynb``."""
    return root / EXECUTED_DIR / f"{name}.ipynb"


def read_chapter(root: Path, name: str) -> Any:
    """The chapter's source as an nbformat notebook (read with jupytext)."""
    import jupytext

    path = source_path(root, name)
    if not path.is_file():
        raise BookBuildError(f"chapter {name!r}: source {path} not found")
    return jupytext.read(path)


# --------------------------------------------------------------------------------------------- parameters


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal (``3``, ``True``, ``[0, 1]``), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parameters_cell(nb: Any) -> Any | None:
    """The code cell tagged ``parameters``, or ``None``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def notebook_parameters(nb: Any) -> dict[str, Any]:
    """Names assigned in the ``parameters`` cell (``name = literal`` lines) and their default values.

    A default that is not a literal is reported as ``None``; the name still counts as a parameter.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    params: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    params[target.id] = ast.literal_eval(value)
                except ValueError:
                    params[target.id] = None
    return params


def env_parameters(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Default parameters from ``$AMNESIAC_BOOK_PARAMS`` (a JSON object); empty when unset."""
    text = (os.environ if environ is None else environ).get(PARAMS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BookBuildError(f"${PARAMS_ENV} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise BookBuildError(f"${PARAMS_ENV} must be a JSON object, got {type(value).__name__}")
    return value


def split_parameters(requested: Mapping[str, Any], available: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(passed, ignored)``: the requested parameters the chapter defines, and the names it does not."""
    passed = {k: v for k, v in requested.items() if k in available}
    ignored = sorted(k for k in requested if k not in available)
    return passed, ignored


# ---------------------------------------------------------------------------------------------- execution


def ensure_kernelspec(name: str = KERNEL_NAME) -> Path:
    """Make sure the kernelspec ``name`` runs this interpreter; install one into ``sys.prefix`` if needed.

    Returns the kernelspec's folder. Jupyter replaces an ``argv[0]`` of ``python``/``python3`` with the
    running interpreter, so the venv's own spec (``ipykernel install --sys-prefix``) is what we want.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def runs_here(spec: Any) -> bool:
        exe = spec.argv[0] if spec.argv else ""
        plain = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
        return exe in plain or (Path(exe).exists() and Path(exe).resolve() == Path(sys.executable).resolve())

    venv_spec = Path(sys.prefix) / "share" / "jupyter" / "kernels" / name / "kernel.json"
    if not venv_spec.is_file():
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix, kernel_name=name)
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        spec = None
    if spec is None or not runs_here(spec):
        os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"  # let the venv's spec win over a user-level one
        spec = KernelSpecManager().get_kernel_spec(name)
        if not runs_here(spec):
            raise BookBuildError(
                f"kernelspec {name!r} at {spec.resource_dir} runs {spec.argv[0]!r}, not {sys.executable}; "
                f"remove it or run `{sys.executable} -m ipykernel install --sys-prefix`"
            )
    return Path(spec.resource_dir)


def error_outputs(nb: Any) -> list[str]:
    """``"cell N: Ename: evalue"`` for every error output in an executed notebook."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
    return found


def _mirror_parameter_tags(path: Path) -> None:
    """Give papermill's ``injected-parameters`` cell the display tags (``hide-*``, ``remove-*``) of the
    ``parameters`` cell, so the book shows both the same way."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    source = parameters_cell(nb)
    display = [t for t in (source.metadata.get("tags", []) if source else []) if t.startswith(("hide-", "remove-"))]
    changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and any(t not in tags for t in display):
            cell.metadata["tags"] = tags + [t for t in display if t not in tags]
            changed = True
    if changed:
        nbformat.write(nb, path)


def execute_chapter(
    root: Path,
    name: str,
    requested: Mapping[str, Any] | None = None,
    *,
    output: Path | None = None,
    timeout: float | None = None,
) -> ChapterResult:
    """Execute chapter ``name`` with papermill (working directory ``book/``) and time it.

    Only the requested parameters that the chapter's ``parameters`` cell defines are passed (the rest are
    listed in ``ignored``). ``output`` defaults to ``book/_executed/<name>.ipynb``; on failure the notebook
    written so far, with the error, stays there. ``timeout`` is per cell, in seconds (default: none).
    """
    import papermill

    output = output or executed_path(root, name)
    try:
        nb = read_chapter(root, name)
        passed, ignored = split_parameters(requested or {}, notebook_parameters(nb))
    except (BookBuildError, SyntaxError, ValueError, OSError) as err:  # missing or unreadable source
        return ChapterResult(name, "failed", 0.0, None, f"{type(err).__name__}: {err}")
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            nb,
            str(output),
            parameters=passed,
            kernel_name=KERNEL_NAME,
            cwd=str(root / SOURCE_DIR),
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
            start_timeout=120,
        )
    except papermill.PapermillExecutionError as err:
        message = f"{err.ename}: {err.evalue} (execution count {err.exec_count})"
        return ChapterResult(name, "failed", time.perf_counter() - start, output, message, ignored)
    except Exception as err:  # kernel death, cell timeout, unreadable source: report it as this chapter's failure
        message = f"{type(err).__name__}: {err}"
        return ChapterResult(name, "failed", time.perf_counter() - start, output, message, ignored)
    seconds = time.perf_counter() - start
    _mirror_parameter_tags(output)
    return ChapterResult(name, "ok", seconds, output, None, ignored)


# ------------------------------------------------------------------------------------------ vendor assets


def vendor_complete(vendor: Path) -> bool:
    """Whether ``vendor`` holds every file the HTML loads locally, from the packages pinned here."""
    manifest = vendor / VENDOR_MANIFEST
    if not manifest.is_file() or manifest.read_text(encoding="utf8") != _MANIFEST_TEXT:
        return False
    return all((vendor / rel).exists() for rel in VENDOR_REQUIRED)


def _copy_package_part(package: Path, part: str, dest: Path) -> None:
    """Copy ``package/part`` (a file or a folder, minus source maps and unused bundles) to ``dest``."""
    src = package / part
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        shutil.copy2(src, dest)
        return
    ignore = lambda _dir, names: [n for n in names if n.endswith(_SKIP_SUFFIXES) or n in _SKIP_NAMES]
    shutil.copytree(src, dest, ignore=ignore)


def _extract(tarball: Path, dest: Path) -> Path:
    """Unpack an npm tarball into ``dest``; returns its ``package/`` folder."""
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest)  # noqa: S202
    return dest / "package"


def ensure_vendor(root: Path, *, npm: str = "npm") -> bool:
    """Make sure ``book/vendor/`` holds MathJax 3, require.js and the ipywidgets HTML manager.

    Runs ``npm pack`` (tarballs only, no dependency tree) only when the folder is missing or incomplete, then
    copies the needed files in. Returns ``False`` (and logs why) when they cannot be fetched: the HTML then
    falls back to loading them from CDNs.
    """
    vendor = root / VENDOR_DIR
    if vendor_complete(vendor):
        return True
    if shutil.which(npm) is None:
        log.warning("npm not found: cannot fetch MathJax/require.js/widget manager into %s", vendor)
        return False
    with tempfile.TemporaryDirectory(prefix="amnesiac-vendor-") as tmp:
        work = Path(tmp)
        cmd = [npm, "pack", "--silent", *VENDOR_PACKAGES]
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("`%s` failed: %s", " ".join(cmd), err)
            return False
        tarballs = sorted(work.glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != len(VENDOR_PACKAGES):
            log.warning("`%s` failed (exit %s): %s", " ".join(cmd), proc.returncode, proc.stderr.strip()[-2000:])
            return False
        staging = work / "vendor"
        for spec, parts in VENDOR_PACKAGES.items():
            stem = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-")
            tarball = next(t for t in tarballs if t.name.startswith(stem + "-"))
            package = _extract(tarball, work / stem)
            for part, dest in parts:
                _copy_package_part(package, part, staging / dest)
        for asset in (staging / WIDGET_ASSETS).iterdir():
            if asset.suffix in _ASSET_SUFFIXES:
                shutil.copy2(asset, staging / WIDGET_ASSET_COPY / asset.name)
        (staging / "requirejs" / "config.js").write_text(REQUIREJS_CONFIG, encoding="utf8")
        (staging / VENDOR_MANIFEST).write_text(_MANIFEST_TEXT, encoding="utf8")
        if not vendor_complete(staging):
            log.warning("npm packages lack expected files %s", VENDOR_REQUIRED)
            return False
        if vendor.exists():
            shutil.rmtree(vendor)
        vendor.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), vendor)
    return True


def cdn_config(root: Path) -> Path:
    """Write ``_build/_config.cdn.yml``: ``_config.yml`` without the local-asset settings (CDN defaults)."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf8"))
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    for key in _VENDOR_SETTINGS:
        if key == "html_static_path":  # keep the other static folders (the browser panel's script)
            kept = [p for p in sphinx_config.get(key) or [] if p != VENDOR_DIR]
            sphinx_config[key] = kept
        else:
            sphinx_config.pop(key, None)
    path = root / "_build" / "_config.cdn.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf8")
    return path


# -------------------------------------------------------------------------------------------------- HTML


def jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` script beside this interpreter, else the same CLI through ``python -c``."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


def build_html(root: Path, *, config: Path | None = None) -> int:
    """Run ``jupyter-book build . --path-output .`` in ``root`` (HTML in ``_build/html``); its exit code."""
    (root / PANEL_DATA_DIR).mkdir(parents=True, exist_ok=True)  # a static folder Sphinx expects to exist
    cmd = [*jupyter_book_command(), "build", ".", "--path-output", "."]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, cwd=root, check=False).returncode


def external_scripts(html_dir: Path) -> dict[str, list[str]]:
    """Page -> ``src`` of every ``<script>`` loaded from another host, for every page under ``html_dir``."""
    from html.parser import HTMLParser

    class Scripts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            src = dict(attrs).get("src") or ""
            if tag == "script" and src.startswith(("http://", "https://", "//")):
                self.found.append(src)

    result = {}
    for page in sorted(html_dir.rglob("*.html")):
        parser = Scripts()
        parser.feed(page.read_text(encoding="utf8", errors="replace"))
        if parser.found:
            result[str(page.relative_to(html_dir))] = parser.found
    return result


# --------------------------------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tools/bookbuild.py",
        description="Execute the book's chapters with papermill, then build the HTML with Jupyter Book.",
    )
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="execute only these chapters")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="chapter parameter (a Python literal, else a string); overrides $" + PARAMS_ENV,
    )
    parser.add_argument("--no-html", action="store_true", help="execute the chapters only")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="per-cell time limit, seconds")
    parser.add_argument("--root", type=Path, default=None, help="book root (default: found from the cwd)")
    return parser.parse_args(argv)


def format_table(results: Sequence[ChapterResult]) -> str:
    """A plain-text table: chapter, seconds, status."""
    width = max([len("chapter"), *(len(r.name) for r in results)])
    lines = [f"{'chapter':<{width}}  {'seconds':>8}  status", f"{'-' * width}  {'-' * 8}  ------"]
    for r in results:
        seconds = f"{r.seconds:8.1f}" if r.status in ("ok", "failed") else f"{'-':>8}"
        lines.append(f"{r.name:<{width}}  {seconds}  {r.status}")
    total = sum(r.seconds for r in results)
    lines.append(f"{'total':<{width}}  {total:8.1f}")
    return "\n".join(lines)


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("papermill").setLevel(logging.ERROR)
    try:
        root = find_root(args.root)
        chapters = chapter_names(root)
        unknown = sorted(set(args.only or []) - set(chapters))
        if unknown:
            raise BookBuildError(f"unknown chapter(s) {unknown}; the toc lists {chapters}")
        requested = {**env_parameters(), **{k: parse_value(v) for k, v in args.parameter}}
        ensure_kernelspec()
    except BookBuildError as err:
        _report(f"bookbuild: {err}")
        return 2

    selected = [c for c in chapters if not args.only or c in args.only]
    if requested:
        _report(f"parameters: {requested}")
    results: list[ChapterResult] = []
    failed: ChapterResult | None = None
    for name in chapters:
        if name not in selected:
            results.append(ChapterResult(name, "kept" if executed_path(root, name).exists() else "missing"))
            continue
        if failed is not None:
            results.append(ChapterResult(name, "not run"))
            continue
        _report(f"executing {name} ...")
        result = execute_chapter(root, name, requested, timeout=args.timeout)
        if result.ignored:
            _report(f"  warning: {name} has no parameter(s) {result.ignored}; not passed")
        _report(f"  {name}: {result.status} in {result.seconds:.1f} s")
        results.append(result)
        if result.status != "ok":
            failed = result
    _report("\n" + format_table(results))
    if failed is not None:
        _report(f"\nbookbuild: chapter {failed.name!r} failed: {failed.error}")
        if failed.output is not None and failed.output.exists():
            _report(f"  the executed notebook with the error is kept at {failed.output}")
        return 1
    if args.no_html:
        return 0

    missing = [r.name for r in results if r.status == "missing"]
    if missing:
        _report(f"bookbuild: no executed notebook for {missing}; run them first (or pass --no-html)")
        return 1
    if not vendor_complete(root / VENDOR_DIR):
        _report(f"fetching MathJax, require.js and the widget manager with npm into {root / VENDOR_DIR} ...")
    local = ensure_vendor(root)
    if not local:
        _report("bookbuild: local MathJax/require.js/widget manager unavailable; the HTML will load them from CDNs")
    start = time.perf_counter()
    code = build_html(root, config=None if local else cdn_config(root))
    _report(f"jupyter-book build: exit {code} in {time.perf_counter() - start:.1f} s -> {root / HTML_DIR}")
    if code == 0 and local:
        for page, srcs in external_scripts(root / HTML_DIR).items():
            _report(f"  warning: {page} loads scripts from other hosts: {srcs}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
