#!/bin/busybox sh
# /init of the guest tier's initramfs (busybox sh as PID 1): load the modules, put the host's
# "/" (9p, read-only) under a tmpfs overlay, mount the run's exchange directory at /xfer, and
# switch to the real root: /guest/stage2 runs the run's command, or systemd boots first and
# runs stage2 as a unit (guest.init=systemd).
# Kernel command line words (set by tests/guest/machine.py):
#   guest.role=NAME    the command is /xfer/NAME.sh; its exit status goes to /xfer/NAME.rc
#   guest.uuid=UUID    this guest's famfs system UUID (/opt/famfs/system_uuid and
#                      FAMFS_PY_SYSTEM_UUID): two guests on one memory are two hosts
#   guest.init=systemd boot Debian's systemd (from the host's root) as PID 1
#   guest.persist      restore /xfer/persist.tar into the root before it starts (a "disk"
#                      that outlives a power cycle: units, fstab lines)
# Under systemd, /xfer/system.conf (if any) becomes a system.conf.d drop-in.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ROLE=main INIT= UUID= PERSIST=
for word in $(cat /proc/cmdline); do
    case "$word" in
        guest.role=*) ROLE=${word#guest.role=} ;;
        guest.init=*) INIT=${word#guest.init=} ;;
        guest.uuid=*) UUID=${word#guest.uuid=} ;;
        guest.persist) PERSIST=1 ;;
    esac
done
say() { echo "guest-init: $* (uptime $(cut -d' ' -f1 /proc/uptime 2>/dev/null)s)"; }
fail() { echo "guest-init: $*"; echo "guest-init: exit status 125"; poweroff -f; }

KVER=$(uname -r)
while read -r module; do
    insmod "/kmods/lib/modules/$KVER/$module" || echo "guest-init: insmod $module failed"
done </kmods/order
say "modules loaded"

mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
    || fail "cannot mount the host's root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot \
    || fail "cannot mount the overlay root"
mkdir -p /newroot/xfer /newroot/guest "/newroot/lib/modules"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer /newroot/xfer \
    || fail "cannot mount the exchange directory"
cp -a "/kmods/lib/modules/$KVER" /newroot/lib/modules/
cp /stage2 /newroot/guest/stage2
cp /bin/busybox /newroot/guest/busybox
chmod 0755 /newroot/guest/stage2
printf '%s\n' "$ROLE" >/newroot/guest/role
if [ -n "$UUID" ]; then
    mkdir -p /newroot/opt/famfs
    rm -f /newroot/opt/famfs/system_uuid
    printf '%s\n' "$UUID" >/newroot/opt/famfs/system_uuid
    printf 'FAMFS_PY_SYSTEM_UUID=%s\n' "$UUID" >/newroot/guest/env
fi
# the host's /etc/fstab is not this machine's: start from an empty one
: >/newroot/etc/fstab
if [ -n "$PERSIST" ] && [ -f /newroot/xfer/persist.tar ]; then
    tar -x -f /newroot/xfer/persist.tar -C /newroot || fail "cannot restore /xfer/persist.tar"
    say "restored /xfer/persist.tar"
fi
say "root ready"
for d in proc sys dev; do mount --move "/$d" "/newroot/$d"; done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run

if [ "$INIT" = systemd ]; then
    units=/newroot/etc/systemd/system
    mkdir -p "$units"
    # boot to famfs-guest.target (basic.target and the run's command), not multi-user: the
    # host's own services would start in the guest too
    cat >"$units/famfs-guest-run.service" <<'EOF'
[Unit]
Description=the guest tier's command
After=basic.target
[Service]
Type=oneshot
ExecStart=/guest/stage2
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
EOF
    cat >"$units/famfs-guest.target" <<'EOF'
[Unit]
Description=the guest tier
Requires=basic.target famfs-guest-run.service
After=basic.target
AllowIsolate=yes
EOF
    ln -sf famfs-guest.target "$units/default.target"
    # the run's manager settings (the environment of every unit, timeouts for TCG)
    if [ -f /newroot/xfer/system.conf ]; then
        mkdir -p /newroot/etc/systemd/system.conf.d
        cp /newroot/xfer/system.conf /newroot/etc/systemd/system.conf.d/famfs-guest.conf
    fi
    # Debian's tmp.conf empties /tmp at boot ("D /tmp"): the host's /tmp, seen through the
    # overlay, holds venvs and scripts the run may use; keep it
    mkdir -p /newroot/etc/tmpfiles.d
    echo 'd /tmp 1777 root root -' >/newroot/etc/tmpfiles.d/tmp.conf
    # units that cannot work here (no network, no getty, a read-only host root)
    for unit in getty@tty1.service serial-getty@ttyS0.service console-getty.service \
        systemd-networkd.service networking.service systemd-resolved.service \
        systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer man-db.timer \
        e2scrub_all.timer fstrim.timer systemd-firstboot.service systemd-remount-fs.service \
        systemd-fsck-root.service cron.service ssh.service tmp.mount \
        systemd-udev-settle.service; do
        ln -sf /dev/null "$units/$unit"
    done
    : >/newroot/etc/machine-id
    exec switch_root /newroot /lib/systemd/systemd --log-level=warning
fi
exec switch_root /newroot /guest/stage2
