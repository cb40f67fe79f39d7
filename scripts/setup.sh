#!/usr/bin/env bash
# Prepare this machine for famfs-py's tests and demo: the Debian packages they use, then a
# virtualenv in .venv with famfs-py (editable) and its test tools. Safe to run again: it
# installs only what is missing and rebuilds .venv only when the build files (pyproject.toml,
# setup.py, the C extension's source) or the Python it is made from changed. Needs a Debian 12 machine (as root, for apt) with git and make.
#   PYTHON=/path/to/python3.11+   make the venv from this Python instead of Debian's
#   VENV=DIR                       the venv's directory (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  python3 python3-venv python3-dev # Debian's Python 3.11: .venv is made from it
  gcc libc6-dev pkg-config libfuse3-dev # pyfuse3 is built from source
  zlib1g-dev                       # famfs_py.omf._replay checks CRCs with zlib
  fuse3                            # /dev/fuse's tools: fusermount3, mount.fuse3
  zstd                             # the reference images are zstd-compressed
  systemd                          # systemd-analyze and systemd-escape check the unit
  ca-certificates                  # pip fetches from the package index over https
  rsync sqlite3 git tar            # the tools tests/test_daemon_tools.py runs through a mount
)
./scripts/apt-missing.sh setup "${apt_packages[@]}"
./scripts/setup-guest.sh  # the guest test tier (tests/guest): QEMU, busybox, ndctl, udev

# Debian's own Python is preferred to whatever python3 comes first on PATH (pyenv, conda):
# a venv made from a Python under a private home directory cannot run as another user,
# and some tests run the CLI as an unprivileged user.
pick_python() {
  local candidate
  for candidate in ${PYTHON:-} /usr/bin/python3 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  echo "setup: need Python >= 3.11 (Debian 12's python3, or set PYTHON=)" >&2
  exit 1
}
python=$(pick_python)
VENV=${VENV:-.venv}
stamp="$VENV/.famfs-py-installed"
build_files=(pyproject.toml setup.py $(find famfs_py -name '*.c' | sort))
want="python=$(readlink -f "$python") build=$(cat "${build_files[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: making $VENV from $python"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]' --config-settings editable_mode=compat
  echo "$want" >"$stamp"
fi
