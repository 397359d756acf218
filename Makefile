# Two commands a new user needs: `make demo` and `make test`. Both set up everything and are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# transformers <= 5.24's falcon (the GPU machine runs 5.17's, the same layout), beside the venv's newer one:
# tests/test_transformers_compat.py runs the falcon tests under it (llm_energy/measure/inference/packed_gqa.py)
COMPAT := $(VENV)/compat/transformers-5.24

.PHONY: setup glpk demo test bench reference clean help

help:
	@echo "make demo   set up, start a local 3-raylet Ray cluster, run profile -> fit -> plan -> report"
	@echo "make test   set up and run the test suite"
	@echo "make bench  run the benchmarks in benchmarks/"
	@echo "make reference  fetch the authors' public data (pinned commits, checksums) for the tests that use it"

setup: $(STAMP) glpk

$(COMPAT): | $(STAMP)
	rm -rf $(COMPAT).tmp
	$(PIP) install -q --disable-pip-version-check --no-deps --target $(COMPAT).tmp transformers==5.24.0
	mv $(COMPAT).tmp $(COMPAT)

# torch first, pinned to the local CPU build: any other torch request would pull GBs of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -e ".[cluster,dev]"
	touch $(STAMP)

# GLPK's glpsol (the planner's default solver) from Debian when it is missing.
glpk:
	@command -v glpsol >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq glpk-utils >/dev/null; }
	@command -v glpsol >/dev/null 2>&1 || { echo "glpsol still missing: install GLPK (apt-get install glpk-utils)"; exit 1; }

demo: setup
	$(PY) -m cluster.demo

test: setup $(COMPAT)
	$(PY) -m pytest -q -p no:cacheprovider

reference:
	$(PYTHON) scripts/fetch_reference.py

bench: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) out runs .pytest_cache
