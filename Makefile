# guAlta — one entry point for users, developers and CI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# torch/torchvision are pinned first so pip never falls back to an incompatible local wheel.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e ".[train,server,dev]"
	touch $(STAMP)

demo: install
	$(PY) guAlta.py demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/simulator.py

clean:
	rm -rf demo_output .pytest_cache
