#!/usr/bin/env bash
# Shared by qemu-listen.sh and qemu-connect.sh: boots a test guest with one vhost-user virtio-net
# NIC. Not meant to be run directly:
#   examples/qemu-vhost-user.sh client|server SOCKET MAC [IP/PREFIX] [QEMU ARGS...]
# client: QEMU connects to a socket the switch listens on (vswitch `mode=listen`), reconnecting
#         every second; server: QEMU creates the socket and the switch connects (`mode=connect`).
set -euo pipefail

ROLE=${1:-}
shift || true
case "$ROLE" in
  client) NAME=qemu-listen ;;
  server) NAME=qemu-connect ;;
  *) echo "qemu-vhost-user: first argument must be client or server" >&2; exit 2 ;;
esac

die() { echo "$NAME: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$(dirname "${BASH_SOURCE[0]}")/$NAME.sh" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

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
    echo "$NAME: building the guest with ci/build-guest.sh" >&2
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

if [ "$ROLE" = server ]; then
  mkdir -p "$(dirname "$SOCKET")" || die "cannot create the directory of $SOCKET"
  echo "$NAME: QEMU listens on $SOCKET; the guest boots once the switch (mode=connect) connects" >&2
  CHARDEV="socket,id=vhu0,path=$SOCKET,server=on,wait=off"
else
  [ -S "$SOCKET" ] || echo "$NAME: $SOCKET does not exist yet; QEMU waits for the switch to listen on it" >&2
  CHARDEV="socket,id=vhu0,path=$SOCKET,reconnect=1"
fi

# Guest RAM must be shareable with the switch (memfd, share=on). vectors=0: QEMU 7.2 under TCG
# crashes when a vhost-user virtio-net device starts with MSI-X.
exec "$QEMU" -name "vsw-guest,process=qemu-$(basename "$SOCKET")" \
  -accel "$ACCEL" -cpu "$CPU" -smp 1 -m "$MEM" \
  -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -numa node,memdev=mem \
  -nodefaults -no-user-config -nographic -serial mon:stdio -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 no_timer_check vsw.console=interactive vsw.mac=$MAC${IP:+ vsw.ip=$IP} ${APPEND:-}" \
  -chardev "$CHARDEV" \
  -netdev vhost-user,id=net0,chardev=vhu0 \
  -device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0" \
  "$@"
