# pyomero-upload: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= build/demo-experiment
DEMO_OUT ?= build/demo-output
, := ,
BENCH_ARGS ?=
# Where the zeroc-ice wheel is built once and reused (host, CI and image builds).
ICE_WHEEL_DIR ?= $(HOME)/.cache/pyomero-upload/wheels

# Docker images, in build order (each is built FROM the one before it): docker/images.
OWNER ?= pyomero-upload
IMAGES ?= $(shell grep -v '^\#' docker/images)
OMERO_VERSION ?= 5.23.0
# The images' Python (Debian's python$(PYTHON_VERSION)); the cached zeroc-ice wheel
# used is the one tagged for it (3.11: cp311).
PYTHON_VERSION ?= 3.11
# The root image: by default the local one `make root-image` builds from
# Debian's packages (no registry needed); ROOT_IMAGE=debian:bookworm-slim where
# a registry can be reached.
LOCAL_ROOT_IMAGE ?= $(OWNER)/debian:bookworm
ROOT_IMAGE ?= $(LOCAL_ROOT_IMAGE)
# A CA bundle for a TLS-re-signing proxy, handed to builds as a BuildKit
# secret (never stored in a layer). Default: this host's trust store.
EXTRA_CA_CERT ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
DOCKER_BUILD_ARGS ?=
DOCKER_BUILD := docker/scripts/docker-build.sh

.PHONY: help install install-test ice-wheel install-omero install-bench bioformats demo test lint bench clean root-image build-all test-images test-omero test-all

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/%.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Stamps: each install step reruns only when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(BIN)/.installed-omero: $(BIN)/.installed-test
	PYTHON=$(BIN)/python docker/scripts/build-ice-wheel.sh $(ICE_WHEEL_DIR)
	$(BIN)/python -m pip install --quiet --find-links $(ICE_WHEEL_DIR) -e '.[omero,test,web]'
	touch $@

$(BIN)/.installed-bench: $(BIN)/.installed-omero
	$(BIN)/python -m pip install --quiet --find-links $(ICE_WHEEL_DIR) -e '.[omero,test,web,bench]'
	touch $@

install: $(BIN)/.installed ## Create .venv and install the package alone (what `make demo` needs)

install-test: $(BIN)/.installed-test ## Add the test and lint tools (the `test` extra)

ice-wheel: install ## Build the zeroc-ice 3.6.5 wheel for .venv's Python once (cached in ICE_WHEEL_DIR)
	PYTHON=$(BIN)/python docker/scripts/build-ice-wheel.sh $(ICE_WHEEL_DIR)

install-omero: $(BIN)/.installed-omero ## Add omero-py, and omero-web and ezomero for tests (the Ice wheel is built once, ~10 min, then cached)

install-bench: $(BIN)/.installed-bench ## Add the other NGFF writers bench_zarr.py compares with (the `bench` extra)

demo: install ## Make a synthetic experiment, show its plan and export it as OME-TIFF (no server)
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
	$(BIN)/pyomero-upload demo-data $(DEMO_DIR)
	$(BIN)/pyomero-upload plan $(DEMO_DIR)
	$(BIN)/pyomero-upload export $(DEMO_DIR) -o $(DEMO_OUT)
	@ls -l $(DEMO_OUT)/*/

bioformats: install-test ## Fetch Bio-Formats (the tests' reference reader) once into the cache; Java from default-jre-headless
	$(BIN)/python -m pyomero_upload.testing.bioformats

# Tests in parallel, one process per core (pytest-xdist); a group (the Slurm tests) keeps to one.
PYTEST_PARALLEL ?= -n auto --dist loadgroup

test: install-omero bioformats ## Run the test suite: everything but the Docker and real-server tiers
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

SHELL_SCRIPTS = $(shell git ls-files '*.sh') .ci/run

lint: install-test ## ruff, mypy; shellcheck (Debian's) and hadolint; committed notebooks carry no outputs
	$(BIN)/ruff check pyomero_upload tests benchmarks docker notebooks/check_no_outputs.py
	$(BIN)/mypy
	@command -v shellcheck >/dev/null || { echo "make lint needs shellcheck: apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)
	$(BIN)/hadolint $(foreach i,$(IMAGES),$(i)/Dockerfile)
	$(BIN)/python notebooks/check_no_outputs.py

bench: install-bench bioformats ## Benchmarks: start-up; export vs the decode limit and Bio-Formats; upload; on Dask; watch passes
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_export.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_zarr.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_upload.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_distributed.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_watch.py $(BENCH_ARGS)

root-image: ## Build the Debian bookworm root image from Debian's packages (debootstrap)
	docker/root-image/build.sh $(LOCAL_ROOT_IMAGE)

build/%: ## Build one image, e.g. make build/omero_jupyter
	@if [ "$*" = omero_base ] && [ "$(ROOT_IMAGE)" = "$(LOCAL_ROOT_IMAGE)" ]; then $(MAKE) --no-print-directory root-image; fi
	@if [ "$*" = omero_base ] && [ -x $(BIN)/python ]; then $(MAKE) --no-print-directory ice-wheel; fi
	PYTHON_VERSION=$(PYTHON_VERSION) docker/scripts/stage-context.sh $* $(ICE_WHEEL_DIR)
	$(DOCKER_BUILD) --progress=plain \
	  --build-arg OWNER=$(OWNER) --build-arg ROOT_IMAGE=$(ROOT_IMAGE) \
	  --build-arg OMERO_VERSION=$(OMERO_VERSION) --build-arg PYTHON_VERSION=$(PYTHON_VERSION) \
	  $(if $(EXTRA_CA_CERT),--secret id=extra_ca$(,)src=$(EXTRA_CA_CERT)) \
	  $(DOCKER_BUILD_ARGS) -t $(OWNER)/$* $*

build-all: $(foreach i,$(IMAGES),build/$(i)) ## Build every image in order

test-images: install-omero build-all ## Build the images and run their tests (the docker tier)
	$(BIN)/python -m pytest -m docker tests/images

test-omero: install-omero ## Start OME's OMERO stack (docker/compose.yml), wait for a login, run tests/integration
	docker compose -f docker/compose.yml up -d database omeroserver omeroweb
	OMERO_PASSWORD="$$OMERO_ROOT_PASS" $(BIN)/python docker/scripts/wait-omero.py localhost 4064 root 600
	OMERO_TEST_PASSWORD="$$OMERO_ROOT_PASS" $(BIN)/python -m pytest -m omero_server tests/integration

test-all: test test-images ## Everything but the real-server tier (`make test-omero` needs OME's stack)

clean: ## Remove build outputs (not .venv)
	rm -rf build .pytest_cache .ruff_cache
