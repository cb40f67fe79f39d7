# famfs-py: `make demo` sets up this machine and mounts a famfs on an emulated device;
# `make test` runs the whole test suite. Both install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test model lint bench bench-full clean install-service

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

test: setup
	$(PY) -m pytest -q -m "not slow" tests

# the inner loop: the model tier, no FUSE and no daemon (seconds)
model: setup
	$(PY) -m pytest -q -m model tests

lint: setup
	$(VENV)/bin/ruff check famfs_py mkfs tests bench
	$(VENV)/bin/ruff format --check famfs_py mkfs tests bench
	$(VENV)/bin/mypy

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
