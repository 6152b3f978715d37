# Two commands do everything on a fresh machine:  make book  (build the HTML book)  and  make test.
# Each creates .venv and installs the pinned requirements on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml paper/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test test-fast lint book clean

$(STAMP): requirements.txt pyproject.toml paper/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT= $(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e . -e paper
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check amnesiac paper tests tools examples

test: install lint
	$(PY) -m pytest

# the loop while developing: everything but the slow and book tests (a few minutes on 2 cores)
test-fast: install lint
	$(PY) -m pytest -m "not slow and not book"

book: install
	$(PY) tools/bookbuild.py

clean:
	rm -rf _build book/_executed
