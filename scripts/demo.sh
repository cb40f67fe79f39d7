#!/usr/bin/env bash
# The main job, on an emulated device: create it, make a famfs on it, and check it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export FAMFS_PY_DAX_ROOT=${FAMFS_PY_DAX_ROOT:-/run/famfs-py/demo}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

if [ -e "$FAMFS_PY_DAX_ROOT/dev/dax0.0" ]; then
  "$BIN/famfs-py" dax remove dax0.0 >/dev/null
fi
step "$BIN/famfs-py" dax create dax0.0 --size 4g
step "$BIN/famfs-py" dax list --json
step "$BIN/mkfs.famfs-py" dax0.0
step "$BIN/famfs-py" fsck dax0.0
echo
echo "demo: done. The emulated device stays in $FAMFS_PY_DAX_ROOT;"
echo "      remove it with: FAMFS_PY_DAX_ROOT=$FAMFS_PY_DAX_ROOT $BIN/famfs-py dax remove dax0.0"
