# famfs-py: `make demo` sets up this machine and mounts a famfs on an emulated device;
# `make test` runs the whole test suite. Both install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast lint bench bench-full clean install-service

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

test: setup
	$(PY) -m pytest -q -m "not slow" tests

# the edit loop: everything but the guest tier (QEMU guests with a real kernel devdax device)
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not guest" tests

lint: setup
	$(VENV)/bin/ruff check famfs_py mkfs tests bench
	$(VENV)/bin/ruff format --check famfs_py mkfs tests bench

install-service: setup
	./systemd/install.sh

bench: setup
	./scripts/setup-bench.sh
	$(PY) -m bench --quick

bench-full: setup
	./scripts/setup-bench.sh
	$(PY) -m bench --readme

clean:
	rm -rf $(VENV) .pytest_cache
