# Nixie Router. Two commands for a newcomer: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench setup system venv lint clean lab-down

setup: system venv

system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: setup
	@$(PY) -m lab up $(if $(INSTALL),--install)

lab-down:
	@$(PY) -m lab down

test: setup
	@$(PY) -m tests.run_tiers

bench: setup
	@$(PY) -m bench.run_all

lint: venv
	@$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .lab build *.egg-info
