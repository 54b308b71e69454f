# The two commands: `make demo` (set-up + the flagship demo), `make test` (set-up + all tests).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
PROFILE ?= classroom
BACKEND ?= auto
DEBIAN_PACKAGES := nginx redis-server debootstrap postgresql prometheus prometheus-alertmanager chromium
OFFLINE_BASE := mlops-course/base:bookworm
# Course images build FROM this; the offline one is built from Debian packages (no registry
# needed). With internet you may use `make demo BASE_IMAGE=python:3.11-slim`.
BASE_IMAGE ?= $(OFFLINE_BASE)
export BASE_IMAGE

.PHONY: help setup system-deps base-image grader-image demo test test-fast budget lock clean

help:
	@echo "make demo    set up, then run the flagship demo (PROFILE=$(PROFILE))"
	@echo "make test    set up (Debian packages, offline base image, venv), then run every test"
	@echo "make setup   only the Python environment in $(VENV)"
	@echo "make budget  run the lessons as on Binder (classroom, local backend, one CPU): time and memory"
	@echo "make lock    re-resolve pins from pyproject.toml and regenerate derived files"
	@echo "make clean   stop everything the helpers started and remove the workspace"

$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(VENV)/.installed

# Debian packages the servers need; installed when we are root, otherwise we say what to run.
system-deps:
	@missing=""; for b in nginx redis-server debootstrap prometheus promtool prometheus-alertmanager; do \
	  command -v $$b >/dev/null || test -x /usr/sbin/$$b || missing="$$missing $$b"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES); \
	  else echo "missing:$$missing -> sudo apt-get install $(DEBIAN_PACKAGES)"; fi; fi

# The offline base image (no registry needed); skipped without a Docker engine.
base-image: setup system-deps
	@if $(BIN)/python -c "from course_helpers.containers import available; raise SystemExit(not available())"; then \
	  if [ "$(BASE_IMAGE)" = "$(OFFLINE_BASE)" ]; then bash scripts/build-base-image.sh $(OFFLINE_BASE); fi; \
	  $(BIN)/mlops-course image serving; \
	else echo "no Docker engine: skipping the base image (the local backend needs none)"; fi

# The image docker-sandboxed grading runs student kernels in (tests and instructors; not the demo).
grader-image: base-image
	@if $(BIN)/python -c "from course_helpers.containers import available; raise SystemExit(not available())"; then \
	  $(BIN)/mlops-course grade image; \
	else echo "no Docker engine: skipping the grading image (grade batch --sandbox process needs none)"; fi

demo: setup system-deps base-image
	$(BIN)/mlops-course demo --profile $(PROFILE) --backend $(BACKEND)

test: setup system-deps base-image grader-image
	$(BIN)/python -m pytest -v --durations=15 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "unit or integration" $(PYTEST_ARGS)

# Each lesson against its budget (90 s, 1.6 GB) where students run it: one CPU, no Docker
# (DOCKER_HOST points nowhere, so lessons take their no-engine path, as on Binder).
# NOTEBOOKS="02_scaling_vertical_vs_horizontal" runs only those; the table and
# results.csv land under .mlops/reports/notebooks/classroom/.
budget: setup
	MLOPS_BACKEND=local DOCKER_HOST=unix:///nonexistent.sock taskset -c 0 \
	  $(BIN)/mlops-course notebooks --profile classroom $(NOTEBOOKS)

lock: setup
	$(BIN)/python scripts/lock.py

clean:
	-$(BIN)/mlops-course cleanup
	rm -rf .mlops
