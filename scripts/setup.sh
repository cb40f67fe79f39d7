#!/usr/bin/env bash
# Prepare this machine for famfs-py: Debian packages (FUSE 3 and a compiler for pyfuse3),
# then a virtualenv in .venv with famfs-py and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(fuse3 libfuse3-dev pkg-config gcc python3-venv python3-dev zstd)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need Debian packages ${missing[*]}: run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.famfs-py-installed"
stale=0
for f in pyproject.toml setup.py famfs_py/*/*.c; do  # the build's inputs (the C extension too)
  [ -f "$stamp" ] && [ ! "$f" -nt "$stamp" ] || stale=1
done
if [ "$stale" -eq 1 ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]' --config-settings editable_mode=compat
  touch "$stamp"
fi
