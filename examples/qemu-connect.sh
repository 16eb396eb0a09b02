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

die() { echo "qemu-connect: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
SOCKET=$1 MAC=$2
shift 2
IP=${IP:-}
if [ $# -gt 0 ] && [[ $1 != -* ]]; then IP=$1; shift; fi

[[ $MAC =~ ^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$ ]] || die "MAC '$MAC' is not like 52:54:00:00:00:01"
[[ -z $IP || $IP =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "IP '$IP' is not like 10.0.0.1/24"
[[ $SOCKET != *,* ]] || die "socket path must not contain ',' (QEMU option separator)"
[ ${#SOCKET} -lt 108 ] || die "socket path longer than a Unix socket address allows (107 bytes)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KERNEL=${KERNEL:-$ROOT/build/guest/vmlinux}
INITRD=${INITRD:-$ROOT/build/guest/initramfs.cpio.gz}
if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
  if [ "$KERNEL" = "$ROOT/build/guest/vmlinux" ]; then
    echo "qemu-connect: building the guest with ci/build-guest.sh" >&2
    "$ROOT/ci/build-guest.sh" "$ROOT/build/guest" || die "ci/build-guest.sh failed (run as root after ci/install-deps.sh)"
  fi
  [ -f "$KERNEL" ] || die "kernel $KERNEL not found"
  [ -f "$INITRD" ] || die "initramfs $INITRD not found"
fi
QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null 2>&1 || die "$QEMU not found (ci/install-deps.sh installs qemu-system-x86)"
MEM=${MEM:-256}
ACCEL=${ACCEL:-tcg}
CPU=max
[ "$ACCEL" = kvm ] && CPU=host

mkdir -p "$(dirname "$SOCKET")" || die "cannot create the directory of $SOCKET"
echo "qemu-connect: QEMU listens on $SOCKET; the guest boots once the switch (mode=connect) connects" >&2

# Guest RAM must be shareable with the switch (memfd, share=on). vectors=0: QEMU 7.2 under TCG
# crashes when a vhost-user virtio-net device starts with MSI-X.
exec "$QEMU" -name "vsw-guest,process=qemu-$(basename "$SOCKET")" \
  -accel "$ACCEL" -cpu "$CPU" -smp 1 -m "$MEM" \
  -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -numa node,memdev=mem \
  -nodefaults -no-user-config -nographic -serial mon:stdio -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 vsw.console=interactive vsw.mac=$MAC${IP:+ vsw.ip=$IP} ${APPEND:-}" \
  -chardev "socket,id=vhu0,path=$SOCKET,server=on,wait=off" \
  -netdev vhost-user,id=net0,chardev=vhu0 \
  -device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0" \
  "$@"
