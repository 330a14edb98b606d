# Rec-Distill: common tasks. `make help` lists them. CI calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install test demo scaling bench soak lint docs format data clean deploy-check

help: ## List the targets
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py protos/*.proto
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel grpcio-tools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project (editable, with dev extras); quick when nothing changed

test: install ## Install, then run the whole test suite (unit, integration, e2e)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install ## Install, then run the whole distillation loop on the Instacart sample (`recdistill demo`)
	$(BIN)/recdistill demo $(DEMO_ARGS)

scaling: install ## Install, then the teacher-scaling study's CPU grid on Instacart (runs/scaling)
	$(BIN)/recdistill study scaling --out runs/scaling

deploy-check: install ## Install podman (apt) and podman-compose, build the deploy kit's images, run its compose stack with traffic and kills (as root; not in CI)
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null && command -v runc >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			podman runc mmdebstrap uidmap fuse-overlayfs; }
	$(BIN)/python -m pip install --quiet podman-compose==1.6.0
	$(BIN)/python deploy/check/check.py

bench: install ## Install, then run the benchmark suite and write BENCHMARKS.md
	$(BIN)/python -m benchmarks

soak: install ## Install, then a 5-minute fixed-rate soak of the student server (errors, RSS growth)
	$(BIN)/python -m benchmarks.soak --minutes 5

docs: install ## Build the docs site into build/site (mkdocs --strict: a broken link fails)
	$(BIN)/mkdocs build --strict --site-dir build/site

lint: install ## ruff and the layer contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

format: install ## ruff format + fixes
	$(BIN)/ruff check --fix .

data: install ## Prepare MovieLens-100K into data/ml-100k
	$(BIN)/recdistill data prepare --dataset ml-100k --out data/ml-100k

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
