#!/usr/bin/env bash
# Prepare the benchmarks: the test setup (scripts/setup.sh), then the optional `bench` tools
# (matplotlib for the chart, py-spy for profiling the daemon) in the same .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
VENV=${VENV:-.venv}
stamp="$VENV/.famfs-py-bench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  touch "$stamp"
fi
