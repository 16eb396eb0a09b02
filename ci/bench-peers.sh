#!/usr/bin/env bash
# Installs the reference peers vswitch-bench (tests/bench) measures against (DPDK testpmd, Open vSwitch with
# DPDK) and the font its plot uses. Idempotent; run as root. vswitch-bench calls it by itself
# when a peer is missing (unless --no-install).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-peers: run as root (apt-get install needs it)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
PKGS=(dpdk dpdk-dev librte-net-vhost23 openvswitch-switch-dpdk fonts-dejavu-core iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-peers: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package starts the system OVS on install; the benchmark runs a private instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
  systemctl stop openvswitch-switch >/dev/null 2>&1 || true
fi
echo "bench-peers: ok"
