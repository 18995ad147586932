# The README's commands. Each one creates the virtual environment when it is missing.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLSYS_HOME ?= $(CURDIR)/.mlsys
export AIRFLOW_HOME ?= $(MLSYS_HOME)/airflow

.PHONY: demo test up venv clean browser

STAMP := $(VENV)/.installed

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing dependencies into $(VENV) (about 2 minutes the first time)"
	@$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
	@$(BIN)/pip install -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	@$(BIN)/python -c "import airflow, mlflow, torch, snorkel, great_expectations, moto, mlsys" && touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/mlsys demo

# bandit first: any medium or high finding in the shipped code fails the run (docs/security.md lists the skips)
test: venv browser
	$(BIN)/bandit -r include dags plugins --severity-level medium --quiet
	$(BIN)/python -m pytest tests

# Headless Chromium and its driver for the browser tests (tests/ui), and wrk, the independent load client of
# `mlsys bench serve` (tests/bench), from the system's packages (Debian), when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v wrk >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver wrk)

up: venv
	$(BIN)/mlsys up

clean:
	rm -rf $(MLSYS_HOME)
