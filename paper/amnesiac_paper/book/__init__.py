"""Support for the book's chapters (``book/*.md``, executed by papermill): one module per chapter.

:mod:`.common` holds what every chapter uses (parameter validation, loading results, provenance, notes, Markdown
tables) and :mod:`.published` the published numbers the book quotes; the others are named after their chapter
(``book/<name>.md``), with :mod:`.comparison` for the fair comparison in ``book/fidelity.md``. A chapter imports
the modules it uses, e.g. ``from amnesiac_paper.book import common, fidelity``. This package imports none of
them, so importing one module loads only what it needs; a chapter module may import :mod:`.common` and other
chapter modules, never the other way round.
"""
