#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root:
#   installs what is missing (ci/install-deps.sh), builds the switch (release), builds the guest
#   image from the machine's Debian packages (ci/build-guest.sh), then runs the demo
#   (tests/examples/demo.rs):
#     - starts `target/release/vswitch run --config examples/demo.toml --ctl /run/vswitch-demo/ctl.sock`
#       (vm1, vm2 on S-channel 100; vm3, vm4 on S-channel 200; one IP subnet for all four),
#     - boots four QEMU guests (TCG, memfd shared memory), one per port,
#     - pings every guest from every other one, from inside the guests, and prints the matrix,
#     - prints the switch's counters per port and per channel (`vswitch ctl stats`),
#     - kills the guests, stops the switch with SIGTERM and checks its sockets are gone.
# Exit status: 0 when the matrix is exactly "same channel: yes, other channel: no"; 1 when it is
# not; 2 when the demo could not run. Logs stay in /run/vswitch-demo when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it installs packages, reads /boot/vmlinuz-*, and uses /run)" >&2
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
exec ./target/release/examples/demo examples/demo.toml
