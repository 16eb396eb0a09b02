#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need on a fresh Debian 12 machine.
# Idempotent: packages already present are skipped quickly. Must run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get install needs it)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
PKGS=(
  linux-image-amd64 busybox-static iperf3 iproute2 tcpdump cpio xz-utils zstd
  dpdk dpdk-dev librte-net-vhost23 openvswitch-switch-dpdk
  linux-perf valgrind libpcap0.8
  prometheus  # promtool and a Prometheus server for the metrics tests (vswitch/tests/metrics_http.rs)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients  # a private libvirtd (tests/tests/libvirt.rs)
  make gcc  # the tiny Cloud Hypervisor test guest (tests/vnetguest, ci/build-vnetguest.sh)
  clang llvm bpftool  # the dot1ad uplink's XDP program (vswitch/bpf, compiled by vswitch/build.rs)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_qemu=0
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_qemu=1

if [ ${#missing[@]} -gt 0 ] || [ $need_qemu -eq 1 ]; then
  apt-get update -qq
fi

if [ $need_qemu -eq 1 ]; then
  # A fresh machine may carry a backported qemu-utils that conflicts with Debian 12's
  # qemu-system-x86: install both at the qemu-system-x86 candidate version (downgrade allowed).
  v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  echo "install-deps: installing qemu-system-x86 $v"
  apt-get install -y -qq --allow-downgrades \
    "qemu-system-x86=$v" "qemu-utils=$v" >/dev/null
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# openvswitch-switch-dpdk starts the system OVS service on install; the benchmark runs its own
# private instance, so keep the system one out of the way.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
  systemctl stop openvswitch-switch >/dev/null 2>&1 || true
fi

# prometheus starts the system Prometheus on install; the metrics tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus >/dev/null 2>&1 || true
fi

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
echo "install-deps: ok"
