#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root:
#   installs what is missing (ci/install-deps.sh), builds the switch (release), builds the guest
#   image from the machine's Debian packages (ci/build-guest.sh), then runs the demo
#   (tests/examples/demo/main.rs) on two hosts:
#     - creates two network namespaces, vswdemo-a and vswdemo-b (host A and host B), joined by a
#       veth pair, the underlay (10.77.0.1/24 in A, 10.77.0.2/24 in B),
#     - starts a switch in each, as users do:
#       `ip netns exec vswdemo-a target/release/vswitch run --config examples/demo.toml`
#       (vm1, vm2 on S-channel 100; vm3, vm4 on S-channel 200; a VXLAN uplink to B) and
#       `ip netns exec vswdemo-b target/release/vswitch run --config examples/demo-host-b.toml`
#       (vm5 on channel 100, vm6 on channel 200; a VXLAN uplink to A), run directories
#       /run/vswitch-demo and /run/vswitch-demo/host-b,
#     - boots six QEMU guests (TCG, memfd shared memory) in the root namespace, one per port, all
#       in one IP subnet, with MTU 1450 (VXLAN's 50 bytes on a 1500-byte underlay),
#     - pings every guest from every other one, from inside the guests, and prints the matrix,
#     - prints each switch's counters per port, per uplink and per channel (`vswitch ctl stats`),
#       and the frames that crossed the underlay each way,
#     - kills the guests, stops both switches with SIGTERM, checks their sockets are gone, and
#       deletes the namespaces (also on Ctrl-C; a stale one from a crashed run is replaced).
# Exit status: 0 when the matrix is exactly "same channel: yes (on one host and across hosts),
# other channel: no" and frames crossed the uplink both ways; 1 when not; 2 when the demo could
# not run. Logs stay in /run/vswitch-demo when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it installs packages, reads /boot/vmlinuz-*, uses /run and creates network namespaces)" >&2
  exit 2
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "demo: cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 2
fi

./ci/install-deps.sh
echo "demo: building (release)"
cargo build --release --locked
cargo build --release --locked -p vswitch-tests --example demo
./ci/build-guest.sh
exec ./target/release/examples/demo examples/demo.toml examples/demo-host-b.toml
