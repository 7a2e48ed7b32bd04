# guAlta — one entry point for users, developers and CI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test bench clean

install: $(STAMP)

# torch/torchvision are pinned first so pip never falls back to an incompatible local wheel.
# A .venv of another Python (a first `make` with an older python3) is named, not installed over.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' || { echo "guAlta needs Python 3.11 or newer: \
	$(PYTHON) is $$($(PYTHON) -V 2>&1); name one, e.g. make PYTHON=python3.11 $(MAKECMDGOALS)"; exit 1; }
	@[ ! -e $(PY) ] || $(PY) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' || { echo "$(VENV) holds \
	$$($(PY) -V 2>&1): remove it (rm -rf $(VENV)) and run make again"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e ".[train,server,dev]"
	touch $(STAMP)

# System packages the tests need: Debian's chromium (headless page checks); `make test` runs it. Needs root or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

demo: install
	$(PY) guAlta.py demo

test: install system-deps
	$(PY) -m pytest

bench: install
	$(PY) bench/simulator.py

clean:
	rm -rf demo_output .pytest_cache
