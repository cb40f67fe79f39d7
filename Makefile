# famfs-py: `make demo` sets up this machine and mounts a famfs on an emulated device;
# `make test` runs the whole test suite. Both install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test fast test-installed model lint bench bench-full clean install-service

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

# everything: the model tier, mounts and CLI, the reliability campaign's long runs, the guest tier
test: setup
	$(PY) -m pytest -q tests

# the inner loops: without the long runs and the guest tier (minutes); the model tier (seconds)
fast: setup
	$(PY) -m pytest -q -m "not slow and not guest" tests

# the fast selection against a wheel installed into a fresh venv outside the checkout
test-installed: setup
	./scripts/test-installed.sh -q -m "not slow and not guest"

model: setup
	$(PY) -m pytest -q -m model tests

lint: setup
	$(VENV)/bin/ruff check famfs_py tests bench
	$(VENV)/bin/ruff format --check famfs_py tests bench
	$(VENV)/bin/mypy

install-service: setup
	$(VENV)/bin/famfs-py install-service

bench: setup
	./scripts/setup-bench.sh
	$(PY) -m bench --quick

bench-full: setup
	./scripts/setup-bench.sh
	$(PY) -m bench --readme

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info famfs_py/dax/*.so
