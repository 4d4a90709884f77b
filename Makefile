# ecr-multiarch: every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export npm_config_update_notifier := false
export npm_config_fund := false
export npm_config_audit := false
export PYTHONDONTWRITEBYTECODE := 1
# The local run (tools/localrun) and the test support (tests/support) live outside the wheel.
export PYTHONPATH := $(CURDIR)/tools:$(CURDIR)

PYTEST_ARGS ?=
DEMO_ARGS ?=
CDK_ARGS ?=

.PHONY: help setup test lint typecheck unit synth deploy demo bench wheel clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The real OCI registry (CNCF distribution) and independent clients used by
# the tests and the demo; installed from Debian when missing.
.system-packages:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v buildah >/dev/null || missing="$$missing buildah"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

# The local run's container engine (Debian 13's dockerd, containerd and buildx, Debian
# 12's runc and qemu-user-static) and its base image stand-ins (Debian 13's Python for
# amd64, arm64 and armhf): downloaded at the versions of tools/localrun/debian.lock and
# unpacked into .engine/, nothing installed on the system.
.engine/.installed: tools/localrun/debian.lock tools/localrun/debian.py $(BIN)/.installed
	$(BIN)/python -m localrun.debian install
	touch $@

setup: $(BIN)/.installed node_modules/.installed .system-packages .engine/.installed ## install everything (venv, npm, Debian packages, the local engine)

lint: setup ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy (strict for the stitcher core)
	$(BIN)/mypy

test: setup lint typecheck ## lint, type-check and run every test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

synth: setup ## synthesize the sample app offline into cdk.out
	cdk synth --quiet $(CDK_ARGS)

deploy: setup ## deploy the sample app (needs AWS credentials)
	cdk deploy $(CDK_ARGS)

demo: setup ## run the whole workflow locally, no AWS account needed
	$(BIN)/python -m localrun.demo $(DEMO_ARGS)

bench: setup ## print the performance figures
	$(BIN)/python bench/run.py

wheel: setup ## build the wheel into dist/
	$(BIN)/python -m build --wheel --no-isolation --outdir dist .

clean: ## remove everything the targets made
	rm -rf $(VENV) node_modules cdk.out dist build .system-packages .engine .mypy_cache .ruff_cache .pytest_cache *.egg-info
