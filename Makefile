# `make test` on a fresh Debian 12 machine: system packages, virtualenv, lint, import contracts, types, tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system lint test bench chaos up down compose-up compose-down compose-test clean

setup: system $(VENV)/.installed

system:
	@bash deploy/install-system.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

# The main job: a 3-node local cluster (nats-server, control plane, nodelets) running sample containers.
up:
	bash deploy/demo.sh

down:
	$(VENV)/bin/corral down

# The same cluster as containers (needs Docker): NATS, the control plane and three nodelets running nested runc.
compose-up:
	@bash deploy/install-docker.sh
	bash deploy/compose.sh up

compose-down:
	bash deploy/compose.sh down

# The compose demo end to end, from building its image to `down -v`; the last line says `compose: ok total_s=N`.
compose-test: setup
	@bash deploy/install-docker.sh
	$(PY) -m api.composetest

bench: setup
	$(PY) -m store.bench --quick
	$(PY) -m scheduler.bench --quick
	$(PY) -m nodelet.bench --quick
	$(PY) -m nodelet.bench images --quick

# The long chaos run: 100 faults into a local cluster of its own, judged from runc and cgroups.
chaos: setup
	$(VENV)/bin/corral chaos --cycles 100 --seed $${SEED:-1}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
