# Entry points (the README's commands). Everything runs in ./.venv with pinned versions.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)
# A local mirror of the datasets (this project's machines have ../shared/datasets); else download.
ifneq ($(wildcard ../shared/datasets/mnist),)
export REPRO_DATA_MIRROR ?= $(abspath ../shared/datasets)
endif

.PHONY: setup fetch figures test smoke check bench readme

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

setup: $(VENV)/.installed  ## create the venv and install the pinned packages
	$(BIN)/dvc config core.analytics false >/dev/null 2>&1 || true

fetch: setup  ## datasets into data/ (mirror first, then the original sites; checksums verified)
	$(BIN)/python -m repro fetch

figures: fetch  ## regenerate every figure (paper scale: hours on 2 CPU cores; finished runs are cached)
	$(BIN)/dvc repro
	$(BIN)/python -m repro check

test: setup  ## the test suite (< 10 min on 2 cores)
	$(BIN)/python -m pytest

smoke: setup  ## the real pipeline end to end at toy scale, in a scratch clone (CI)
	rm -rf .cache/smoke && mkdir -p .cache && git clone -q . .cache/smoke
	cp params.smoke.yaml .cache/smoke/params.yaml
	cd .cache/smoke && $(abspath $(BIN))/python -m repro fetch && $(abspath $(BIN))/dvc repro
	@# nothing changed: a second repro is a no-op; the claims check runs on the smoke metrics (numbers meaningless)
	cd .cache/smoke && $(abspath $(BIN))/dvc repro > repro2.txt && cat repro2.txt && \
	  grep -q "Data and pipelines are up to date" repro2.txt
	cd .cache/smoke && { $(abspath $(BIN))/python -m repro check || true; } | tee check.txt && grep -q "^summary: " check.txt
	@echo "smoke pipeline OK"

check: setup  ## claims table: reported vs reproduced (exit 1 on an unexpected miss)
	$(BIN)/python -m repro check

bench: setup  ## per-rule epoch time and peak memory relative to BP
	$(BIN)/python -m repro bench --out results/bench.json

readme: setup  ## rewrite README.md's claims/benchmark tables from the committed results
	$(BIN)/python -m repro readme
