# pyomero-upload: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= build/demo-experiment
DEMO_OUT ?= build/demo-output
BENCH_ARGS ?=
# Where the zeroc-ice wheel is built once and reused (host, CI and image builds).
ICE_WHEEL_DIR ?= $(HOME)/.cache/pyomero-upload/wheels

.PHONY: help install ice-wheel install-omero demo test lint bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/%.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed ## Create .venv and install the package with its test tools

ice-wheel: install ## Build the zeroc-ice 3.6.5 wheel for .venv's Python once (cached in ICE_WHEEL_DIR)
	PYTHON=$(BIN)/python docker/scripts/build-ice-wheel.sh $(ICE_WHEEL_DIR)

install-omero: ice-wheel ## Install omero-py into .venv (uses the cached Ice wheel)
	$(BIN)/python -m pip install --quiet --find-links $(ICE_WHEEL_DIR) -e '.[omero,test]'

demo: install ## Make a synthetic experiment, show its plan and export it as OME-TIFF (no server)
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
	$(BIN)/pyomero-upload demo-data $(DEMO_DIR)
	$(BIN)/pyomero-upload plan $(DEMO_DIR)
	$(BIN)/pyomero-upload export $(DEMO_DIR) -o $(DEMO_OUT)
	@ls -l $(DEMO_OUT)/*/

test: install ## Run the test suite
	$(BIN)/python -m pytest

lint: install ## ruff (Python)
	$(BIN)/ruff check pyomero_upload tests benchmarks

bench: install ## Benchmarks: export vs decode-only vs the original's naive method
	$(BIN)/python benchmarks/bench_export.py $(BENCH_ARGS)

clean: ## Remove build outputs (not .venv)
	rm -rf build .pytest_cache .ruff_cache
