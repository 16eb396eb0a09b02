#!/usr/bin/env bash
# Boots a Cloud Hypervisor VM whose virtio-net NIC is a port of the switch.
#
#   examples/cloud-hypervisor.sh SOCKET MAC client|server [CLOUD-HYPERVISOR ARGS...]
#
#   client: Cloud Hypervisor connects to a socket the switch listens on (port mode=listen);
#           it retries for a while if the switch is not up yet and reconnects after a restart.
#     vswitch run --port vm1,socket=/run/vswitch/vm1.sock,channel=100,mac=52:54:00:00:10:01 &
#     examples/cloud-hypervisor.sh /run/vswitch/vm1.sock 52:54:00:00:10:01 client
#   server: Cloud Hypervisor creates the socket and waits (before booting) for the switch to
#           connect (port mode=connect).
#     examples/cloud-hypervisor.sh /run/vswitch/vm2.sock 52:54:00:00:10:02 server &
#     vswitch run --port vm2,socket=/run/vswitch/vm2.sock,channel=100,mac=52:54:00:00:10:02,mode=connect
#
# Environment:
#   CH        the cloud-hypervisor binary (default: $CH_BIN, else cloud-hypervisor on PATH)
#   KERNEL    default build/guest/vmlinux (the project's guest kernel; ci/build-guest.sh)
#   INITRD    default build/guest/initramfs.cpio.gz when KERNEL is the default; empty: none
#   CMDLINE   default "console=ttyS0 vsw.console=interactive vsw.mac=MAC" (+ vsw.ip=$IP if set)
#   MEM       guest memory (default 256M); always shared=on: the switch maps it
#   SERIAL    --serial value (default tty: the serial console is this terminal)
#   QUEUE_SIZE  default 256
# Where KVM cannot boot Linux (nested PVM hosts like these CI machines), boot the project's tiny
# bare-metal PVH virtio-net test guest instead (tests/vnetguest; ci/build-vnetguest.sh builds
# build/vnetguest/vnetguest.elf):
#   KERNEL=build/vnetguest/vnetguest.elf CMDLINE="ip=10.0.0.1 peer=10.0.0.2 count=5 mrg=1 eventidx=1" \
#     examples/cloud-hypervisor.sh /run/vswitch/vm1.sock 52:54:00:00:10:01 client
set -euo pipefail

die() { echo "cloud-hypervisor.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 3 ] || usage
SOCKET=$1 MAC=$2 MODE=$3
shift 3
case "$MODE" in client | server) ;; *) die "mode must be client or server, not '$MODE'" ;; esac
[[ $MAC =~ ^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$ ]] || die "MAC '$MAC' is not like 52:54:00:00:10:01"
[[ $SOCKET != *,* ]] || die "socket path must not contain ',' (option separator)"
[ ${#SOCKET} -lt 108 ] || die "socket path longer than a Unix socket address allows (107 bytes)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CH=${CH:-${CH_BIN:-cloud-hypervisor}}
command -v "$CH" >/dev/null 2>&1 || die "$CH not found: Cloud Hypervisor is not packaged here; set CH=/path/to/cloud-hypervisor"
if [ -z "${KERNEL:-}" ]; then
  KERNEL=$ROOT/build/guest/vmlinux
  INITRD=${INITRD-$ROOT/build/guest/initramfs.cpio.gz}
fi
INITRD=${INITRD:-}
[ -f "$KERNEL" ] || die "kernel $KERNEL not found (ci/build-guest.sh builds build/guest/vmlinux)"
[ -z "$INITRD" ] || [ -f "$INITRD" ] || die "initramfs $INITRD not found"
CMDLINE=${CMDLINE:-console=ttyS0 vsw.console=interactive vsw.mac=$MAC${IP:+ vsw.ip=$IP}}
[ "$MODE" = client ] || mkdir -p "$(dirname "$SOCKET")"

args=(--kernel "$KERNEL" --cmdline "$CMDLINE"
  --cpus boot=1 --memory "size=${MEM:-256M},shared=on"
  --serial "${SERIAL:-tty}" --console off
  --net "vhost_user=true,socket=$SOCKET,vhost_mode=$MODE,mac=$MAC,num_queues=2,queue_size=${QUEUE_SIZE:-256}")
[ -z "$INITRD" ] || args+=(--initramfs "$INITRD")
exec "$CH" "${args[@]}" "$@"
