# assetmatch — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: help setup demo test test-unit test-integration quality format bench clean

help:  ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; anything unpinned would pull the CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install assetmatch with its pinned dependencies

demo: setup  ## build the sample warehouse and run the whole pipeline end to end
	$(BIN)/assetmatch demo

test: setup  ## run the whole test suite (unit + integration)
	$(BIN)/pytest tests -m "not gpu" -q

test-unit: setup  ## fast tests, no services
	$(BIN)/pytest tests/unit -q

test-integration: setup  ## tests against PostgreSQL, MariaDB, Redis, Prefect, MLflow
	$(BIN)/pytest tests/integration -m "not gpu" -q

quality: setup  ## ruff check, ruff format --check, mypy, lint-imports (the layering contract)
	$(BIN)/ruff check src tests flows benchmarks feature_repo
	$(BIN)/ruff format --check src tests flows benchmarks feature_repo
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests flows benchmarks feature_repo
	$(BIN)/ruff format src tests flows benchmarks feature_repo

clean:  ## remove generated state (lake, indexes, mlruns, prefect home)
	rm -rf .assetmatch .prefect mlruns
