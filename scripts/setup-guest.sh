#!/usr/bin/env bash
# Prepare this machine for the guest test tier (tests/guest): QEMU, a static busybox for the
# guest's initramfs, the tools that build it (kmod, cpio, xz, zstd), and what the guest runs
# from the host's root over 9p (ndctl/daxctl for the NVDIMM namespace, udev and systemd for
# the service tests). The guest's kernel is not installed here: the tier downloads Debian's
# kernel package itself (apt-get download) into its cache. Safe to run again.
set -euo pipefail

apt_packages=(qemu-system-x86 busybox-static kmod cpio xz-utils zstd ndctl daxctl udev systemd)
"$(dirname "$0")/apt-missing.sh" setup-guest "${apt_packages[@]}"
