# The README's commands. Each one creates the virtual environment when it is missing.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLSYS_HOME ?= $(CURDIR)/.mlsys
export AIRFLOW_HOME ?= $(MLSYS_HOME)/airflow

.PHONY: demo test up venv clean

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

test: venv
	$(BIN)/python -m pytest tests

up: venv
	$(BIN)/mlsys up

clean:
	rm -rf $(MLSYS_HOME)
