#!/usr/bin/env bash
# The main job, on emulated devices: a famfs made on one simulated host (the master),
# mounted there and on a second simulated host (a client) that shares the same memory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FAMFS_PY_BIN:-$PWD/${VENV:-.venv}/bin}  # FAMFS_PY_BIN: another famfs-py (the tests)
DEMO=${FAMFS_PY_DEMO_DIR:-/run/famfs-py/demo}
MASTER_ROOT=$DEMO/master-host
CLIENT_ROOT=$DEMO/client-host
MASTER_MNT=$DEMO/mnt-master
CLIENT_MNT=$DEMO/mnt-client
CLIENT_UUID=00000000-0000-4000-8000-00000000c11e
export FAMFS_PY_LOG_DIR=$DEMO/logs

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
master() { FAMFS_PY_DAX_ROOT=$MASTER_ROOT "$@"; }
client() { FAMFS_PY_DAX_ROOT=$CLIENT_ROOT FAMFS_PY_SYSTEM_UUID=$CLIENT_UUID "$@"; }

# start from nothing: unmount and remove what an earlier run left
for mnt in "$CLIENT_MNT" "$MASTER_MNT"; do
  if grep -q " $mnt fuse.famfs-py " /proc/mounts; then "$BIN/famfs-py" umount "$mnt"; fi
done
# (a device whose memory is gone, e.g. after a reboot cleared it, is removed the same way)
for root in "$CLIENT_ROOT" "$MASTER_ROOT"; do
  if [ -d "$root/sys/bus/dax/devices/dax0.0" ]; then
    FAMFS_PY_DAX_ROOT=$root "$BIN/famfs-py" dax remove dax0.0 >/dev/null
  fi
done
mkdir -p "$MASTER_MNT" "$CLIENT_MNT"

echo "== the master host: an emulated 4 GiB dax device, a famfs on it, mounted"
step master "$BIN/famfs-py" dax create dax0.0 --size 4g
step master "$BIN/mkfs.famfs-py" dax0.0
step master "$BIN/famfs-py" mount dax0.0 "$MASTER_MNT"
step master "$BIN/famfs-py" mkdir -p "$MASTER_MNT/data/logs"
step master "$BIN/famfs-py" creat -s 4m "$MASTER_MNT/data/buffer"
step master "$BIN/famfs-py" cp README.md "$MASTER_MNT/data/README.md"
step cmp README.md "$MASTER_MNT/data/README.md"
step dd if=/dev/urandom of="$MASTER_MNT/data/buffer" bs=1M count=4 conv=notrunc status=none
step ls -lR "$MASTER_MNT"

echo
echo "== a client host sharing the same memory: it follows the master's log on its own"
step client "$BIN/famfs-py" dax create dax0.0 --share "$MASTER_ROOT/dev/dax0.0"
step client "$BIN/famfs-py" mount dax0.0 "$CLIENT_MNT"
step cmp "$MASTER_MNT/data/buffer" "$CLIENT_MNT/data/buffer"
step master "$BIN/famfs-py" creat -s 1m "$MASTER_MNT/data/logs/new-on-master"
sleep 0.5
step ls -l "$CLIENT_MNT/data/logs"

echo
echo "== ordinary tools on the master's mount: each new file is logged once complete"
echo "   (at fsync, or 1 s after its last close), and only then do other hosts see it"
step cp -r docs "$MASTER_MNT/data/docs"
for _ in $(seq 100); do  # the commit delay, then the client's next look at the log
  [ -f "$CLIENT_MNT/data/docs/architecture.md" ] && break
  sleep 0.1
done
step cmp docs/architecture.md "$CLIENT_MNT/data/docs/architecture.md"
step ls -l "$CLIENT_MNT/data/docs"
step client "$BIN/famfs-py" status "$CLIENT_MNT"
step master "$BIN/famfs-py" status "$MASTER_MNT"

echo
echo "demo: done. Both mounts stay up:"
echo "  master: $MASTER_MNT    client: $CLIENT_MNT"
echo "  unmount with: $BIN/famfs-py umount $CLIENT_MNT; $BIN/famfs-py umount $MASTER_MNT"
