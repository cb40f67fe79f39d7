#!/usr/bin/env bash
# Install famfs-py as a service: the unit template (running this famfs-py), the mount helper
# mount(8) looks for (/sbin/mount.fuse.famfs-py), a udev rule giving dax devices systemd
# device units, and /etc/famfs-py with an example. Run as root; `--uninstall` removes them.
# Where things go can be changed (the tests install into a scratch tree):
#   BIN_DIR   where famfs-py and mount.fuse.famfs-py are (default: where `famfs-py` is on PATH,
#             else this checkout's .venv/bin)
#   UNIT_DIR=/etc/systemd/system  SBIN_DIR=/sbin  UDEV_DIR=/etc/udev/rules.d  CONF_DIR=/etc/famfs-py
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
SBIN_DIR=${SBIN_DIR:-/sbin}
UDEV_DIR=${UDEV_DIR:-/etc/udev/rules.d}
CONF_DIR=${CONF_DIR:-/etc/famfs-py}
if [ -z "${BIN_DIR:-}" ]; then
  if command -v famfs-py >/dev/null; then
    BIN_DIR=$(dirname "$(command -v famfs-py)")
  else
    BIN_DIR=$(cd "$here/.." && pwd)/.venv/bin
  fi
fi
systemd_runs() { [ -d /run/systemd/system ] && [ "$UNIT_DIR" = /etc/systemd/system ]; }

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$UNIT_DIR/famfs-py@.service" "$UDEV_DIR/90-famfs-py-dax.rules"
  if [ "$(readlink "$SBIN_DIR/mount.fuse.famfs-py" 2>/dev/null)" = "$BIN_DIR/mount.fuse.famfs-py" ]; then
    rm -f "$SBIN_DIR/mount.fuse.famfs-py"
  fi
  if systemd_runs; then systemctl daemon-reload; fi
  echo "famfs-py: removed the unit, the mount helper and the udev rule (kept $CONF_DIR)"
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--uninstall]" >&2
  exit 2
fi

for tool in famfs-py mount.fuse.famfs-py; do
  if [ ! -x "$BIN_DIR/$tool" ]; then
    echo "famfs-py install: $BIN_DIR/$tool is missing (run ./scripts/setup.sh or set BIN_DIR)" >&2
    exit 1
  fi
done
mkdir -p "$UNIT_DIR" "$SBIN_DIR" "$UDEV_DIR" "$CONF_DIR"
sed "s|/usr/local/bin/famfs-py|$BIN_DIR/famfs-py|g" "$here/famfs-py@.service" \
  >"$UNIT_DIR/famfs-py@.service"
chmod 0644 "$UNIT_DIR/famfs-py@.service"
ln -sfn "$BIN_DIR/mount.fuse.famfs-py" "$SBIN_DIR/mount.fuse.famfs-py"
install -m 0644 "$here/90-famfs-py-dax.rules" "$UDEV_DIR/90-famfs-py-dax.rules"
install -m 0644 "$here/example.conf" "$CONF_DIR/example.conf"
if systemd_runs; then
  systemctl daemon-reload
  udevadm control --reload || true
  # dax devices that are already there get their device units now, not at the next boot
  udevadm trigger --action=add --subsystem-match=dax || true
fi
echo "famfs-py: installed $UNIT_DIR/famfs-py@.service, $SBIN_DIR/mount.fuse.famfs-py," \
  "$UDEV_DIR/90-famfs-py-dax.rules and $CONF_DIR/example.conf (famfs-py in $BIN_DIR)"
