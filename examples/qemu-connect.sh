#!/usr/bin/env bash
# Boots a test guest whose virtio-net NIC is a vhost-user SERVER: QEMU creates and listens on the
# socket (server=on,wait=off) and the switch connects to it (vswitch port `mode=connect`); a
# restarted switch reconnects by itself. QEMU waits before booting the guest until the switch has
# connected once.
#
#   examples/qemu-connect.sh SOCKET MAC [IP/PREFIX] [QEMU ARGS...]
#
#   examples/qemu-connect.sh /run/vswitch/vm2.sock 52:54:00:00:01:02 10.0.100.2/24 &
#   vswitch run --port vm2,socket=/run/vswitch/vm2.sock,channel=100,mode=connect
#
# Environment: KERNEL, INITRD (default build/guest/vmlinux and initramfs.cpio.gz, built with
# ci/build-guest.sh if missing), MEM (MiB, default 256), APPEND (extra kernel command line),
# QEMU (binary, default qemu-system-x86_64), ACCEL (default tcg: /dev/kvm here cannot run a stock
# kernel; use ACCEL=kvm where KVM works).
# The serial console is this terminal: a busybox shell with ping, ip and iperf3.
# Quit with Ctrl-A X.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/qemu-vhost-user.sh" server "$@"
