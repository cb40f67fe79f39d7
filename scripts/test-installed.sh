#!/usr/bin/env bash
# Run the test suite against an installed copy of famfs-py: build the wheel (from the sdist,
# as a packager does), install it with its test tools into a fresh virtualenv outside this
# checkout, and run this checkout's tests/ with that venv's pytest from outside the checkout,
# so that `import famfs_py` and every command come from the installed copy (the suite's
# conftest refuses to run otherwise: FAMFS_PY_TEST_INSTALLED=1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
VENV=${VENV:-.venv}
work=$(mktemp -d "${TMPDIR:-/tmp}/famfs-py-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT
# build from a copy, so the checkout gets no build/ or *.egg-info
mkdir "$work/source"
tar -C "$repo" --exclude=./.git --exclude="./$VENV" --exclude=./build --exclude=./dist \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' -cf - pyproject.toml setup.py README.md famfs_py |
  tar -C "$work/source" -xf -
"$VENV/bin/python" -m build -q --outdir "$work/dist" "$work/source" >/dev/null
wheel=$(ls "$work"/dist/famfs_py-*.whl)
base=$("$VENV/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
"$base" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel[test]"
echo "test-installed: famfs-py from $wheel in $work/venv"
cd "$work"
FAMFS_PY_TEST_INSTALLED=1 "$work/venv/bin/python" -m pytest -p no:cacheprovider \
  --rootdir="$repo" -c "$repo/pyproject.toml" "$@" "$repo/tests"
