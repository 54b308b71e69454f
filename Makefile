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
PUBLIC_BASE := python:3.11-slim
# Course images build FROM BASE_IMAGE: the public python:3.11-slim where a registry answers,
# else (or with OFFLINE=1) the offline one, built from Debian packages (root, debootstrap).
# Decided once per `make` run, only for the goals that build images; BASE_IMAGE=... forces one.
ifeq ($(origin BASE_IMAGE),undefined)
ifneq ($(filter demo test base-image grader-image,$(MAKECMDGOALS)),)
BASE_IMAGE := $(shell bash scripts/pick-base-image.sh $(PUBLIC_BASE) $(OFFLINE_BASE))
else
BASE_IMAGE := $(PUBLIC_BASE)
endif
endif
export BASE_IMAGE
TASKSET := $(shell command -v taskset >/dev/null 2>&1 && echo "taskset -c 0")

.PHONY: help setup system-deps base-image grader-image demo test test-fast budget lock clean

help:
	@echo "make demo    set up, then run the flagship demo (PROFILE=$(PROFILE))"
	@echo "make test    set up (Debian packages, base image, venv), then run every test"
	@echo "make setup   only the Python environment in $(VENV)"
	@echo "make budget  run the lessons as on Binder (classroom, local backend, one CPU): time and memory"
	@echo "make lock    re-resolve pins from pyproject.toml and regenerate derived files"
	@echo "make clean   stop everything the helpers started and remove the workspace"

$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	@echo "== setup 1/4: Python packages into $(VENV) from requirements-dev.lock (first time: several"
	@echo "   minutes, mostly downloads; afterwards skipped until the locks change)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(VENV)/.installed

# Debian packages the servers need; installed when we are root, otherwise we say what to run.
system-deps:
	@echo "== setup 2/4: Debian packages (nginx, redis-server, debootstrap, postgresql, prometheus,"
	@echo "   prometheus-alertmanager, chromium): installed when missing and root (a minute or two), otherwise"
	@echo "   the apt-get line to run"
	@missing=""; for b in nginx redis-server debootstrap prometheus promtool prometheus-alertmanager chromium; do \
	  command -v $$b >/dev/null || test -x /usr/sbin/$$b || missing="$$missing $$b"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES); \
	  else echo "missing:$$missing -> sudo apt-get install $(DEBIAN_PACKAGES)"; fi; fi

# The offline base image (no registry needed); skipped without a Docker engine.
base-image: setup system-deps
	@echo "== setup 3/4: images FROM $(BASE_IMAGE) (offline base: about 35 s of debootstrap the"
	@echo "   first time; the serving image: 80-110 s cold, seconds when cached; skipped without Docker)"
	@if $(BIN)/python -c "from course_helpers.containers import available; raise SystemExit(not available())"; then \
	  if [ "$(BASE_IMAGE)" = "$(OFFLINE_BASE)" ]; then bash scripts/build-base-image.sh $(OFFLINE_BASE); fi; \
	  $(BIN)/mlops-course image serving; \
	else echo "no Docker engine: skipping the base image (the local backend needs none)"; fi

# The image docker-sandboxed grading runs student kernels in (tests and instructors; not the demo).
grader-image: base-image
	@echo "== setup 3b/4: the grading sandbox's image (kernel + the assignments' packages, offline;"
	@echo "   a few minutes cold, seconds when cached; skipped without Docker)"
	@if $(BIN)/python -c "from course_helpers.containers import available; raise SystemExit(not available())"; then \
	  $(BIN)/mlops-course grade image; \
	else echo "no Docker engine: skipping the grading image (grade batch --sandbox process needs none)"; fi

demo: setup system-deps base-image
	@echo "== 4/4: the showdown (PROFILE=$(PROFILE), BACKEND=$(BACKEND)): two deployments under Locust,"
	@echo "   one replica killed each; the classroom profile takes a few minutes"
	$(BIN)/mlops-course demo --profile $(PROFILE) --backend $(BACKEND)

test: setup system-deps base-image grader-image
	@echo "== 4/4: every test (markers unit, integration, docker, notebooks, grading, binder)"
	$(BIN)/python -m pytest -v --durations=15 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "unit or integration" $(PYTEST_ARGS)

# Each lesson against its budget (90 s, the capstone 300 s, 1.6 GB; the series 15 min) where
# students run it: one CPU (taskset, on Linux; elsewhere unpinned), no Docker (DOCKER_HOST
# points nowhere, so lessons take their no-engine path, as on Binder).
# NOTEBOOKS="02_scaling_vertical_vs_horizontal" runs only those; the table and
# results.csv land under .mlops/reports/notebooks/classroom/.
budget: setup
	MLOPS_BACKEND=local DOCKER_HOST=unix:///nonexistent.sock $(TASKSET) \
	  $(BIN)/mlops-course notebooks --profile classroom $(NOTEBOOKS)

lock: setup
	$(BIN)/python scripts/lock.py

clean:
	-$(BIN)/mlops-course cleanup
	rm -rf .mlops
