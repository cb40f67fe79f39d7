#!/bin/sh
# Stage 2 of the guest tier's boot, in the real root (PID 1, or the unit famfs-guest-run under
# systemd): make /dev/dax0.0 if the NVDIMM has none yet, run /xfer/ROLE.sh, record its exit
# status in /xfer/ROLE.rc and on the console, and power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
ROLE=$(cat /guest/role)
[ -f /guest/env ] && export $(cat /guest/env)
say() { echo "guest-init: $* (uptime $(cut -d' ' -f1 /proc/uptime)s)"; }
if [ "$$" = 1 ]; then
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
fi
hostname "guest-$ROLE" 2>/dev/null
# the label-less namespace of a fresh NVDIMM becomes a devdax device, its struct pages in
# guest RAM (--map=mem): device byte 0 is at offset 0x200000 of the backing file; the info
# block lives in the backing file, so later boots of the same image find /dev/dax0.0 at once
if [ ! -e /dev/dax0.0 ] && [ -e /sys/bus/nd/devices/namespace0.0 ]; then
    ndctl create-namespace -f -e namespace0.0 --mode=devdax --map=mem --align=2M >/dev/null \
        || say "ndctl create-namespace failed"
fi
if [ -e /sys/bus/dax/devices/dax0.0/resource ]; then
    start=$(cat /sys/bus/dax/devices/dax0.0/resource)
    region=$(cat /sys/bus/nd/devices/region0/resource)
    say "dax0.0: $(cat /sys/bus/dax/devices/dax0.0/size) bytes at backing-file offset $(printf 0x%x $((start - region)))"
fi
say "running /xfer/$ROLE.sh"
/bin/sh "/xfer/$ROLE.sh"
rc=$?
echo "$rc" >"/xfer/$ROLE.rc"
sync
say "exit status $rc"
/guest/busybox poweroff -f
