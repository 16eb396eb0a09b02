#!/usr/bin/env bash
# Boots a test guest whose virtio-net NIC is a vhost-user CLIENT of a socket the switch listens on
# (vswitch port `mode=listen`, the QEMU default). QEMU reconnects every second if the switch
# restarts (reconnect=1), and waits before booting until the switch's socket accepts it.
#
#   examples/qemu-listen.sh SOCKET MAC [IP/PREFIX] [QEMU ARGS...]
#
#   vswitch run --port vm1,socket=/run/vswitch/vm1.sock,channel=100,mode=listen &
#   examples/qemu-listen.sh /run/vswitch/vm1.sock 52:54:00:00:01:01 10.0.100.1/24
#
# Environment: KERNEL, INITRD (default build/guest/vmlinux and initramfs.cpio.gz, built with
# ci/build-guest.sh if missing), MEM (MiB, default 256), APPEND (extra kernel command line),
# QEMU (binary, default qemu-system-x86_64), ACCEL (default tcg: /dev/kvm here cannot run a stock
# kernel; use ACCEL=kvm where KVM works).
# The serial console is this terminal: a busybox shell with ping, ip and iperf3.
# Quit with Ctrl-A X.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/qemu-vhost-user.sh" client "$@"
