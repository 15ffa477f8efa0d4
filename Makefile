# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Debian packages the tests drive as real peers (installed when missing; see tools/).
TEST_PACKAGES := socat chromium systemd

.PHONY: all venv run test lint typecheck unit system-packages clean

all: venv

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

system-packages:
	tools/system-packages.sh $(TEST_PACKAGES)

lint: venv
	$(VENV)/bin/ruff check wsproxy tests
	$(VENV)/bin/ruff format --check wsproxy tests

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest

test: venv system-packages lint typecheck unit

run: venv
	tools/run-demo.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
