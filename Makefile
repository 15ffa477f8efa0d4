# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Debian packages the tests drive as real peers (installed when missing; see tools/).
TEST_PACKAGES := socat chromium telnetd tigervnc-standalone-server systemd nginx nodejs \
	redis-server haproxy novnc libnss-wrapper

.PHONY: all venv run test lint typecheck unit system-packages rebind clean bench soak

all: venv rebind

# The LD_PRELOAD library for wrapped programs, built where wsproxy loads it: the package copy
# (`pip install .` builds the same file: setup.py). One copy, so none can be stale.
REBIND_CFLAGS := -Wall -Wextra -Werror -O2 -fPIC -shared
rebind: wsproxy/rebind.so

wsproxy/rebind.so: rebind/rebind.c
	$(CC) $(REBIND_CFLAGS) -o $@ $< -ldl -pthread

$(STAMP): requirements.txt requirements-test.txt pyproject.toml setup.py rebind/rebind.c \
		wsproxy/_speedups.c
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

test: venv rebind system-packages lint typecheck unit

run: venv rebind
	tools/run-demo.sh

# The property tests (hypothesis: tests marked "hypothesis") with the "fuzz" profile of
# tests/conftest.py, many more examples and new ones each round, rounds until FUZZ_SECONDS passed.
FUZZ_SECONDS ?= 300
.PHONY: fuzz
fuzz: venv
	end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); \
	while [ $$(date +%s) -lt $$end ]; do \
		HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q -p no:cacheprovider -o timeout=0 \
			-m hypothesis || exit 1; \
	done

# The benchmark suite (README, "Performance"): a few minutes, not part of `make test`.
# BENCH_ARGS=--quick for a short run, BENCH_ARGS="-k echo" for some scenarios.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_PACKAGES := socat openssl

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: $(BENCH_STAMP)
	tools/system-packages.sh $(BENCH_PACKAGES)
	$(PY) -m bench $(BENCH_ARGS)

# The fault soak for DURATION seconds (README, "Fault soak"); `make test` runs 20 s of it.
DURATION ?= 600
soak: venv rebind
	SOAK_DURATION=$(DURATION) $(VENV)/bin/pytest -q -s -p no:cacheprovider tests/test_soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f rebind/rebind.so wsproxy/rebind.so wsproxy/_speedups*.so
