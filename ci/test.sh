#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit/property tests, in-process vhost-user
# tests, DPDK virtio-user tests, real QEMU guests, and Cloud Hypervisor when it is available.
# Installs what it needs first (Debian packages, cargo-nextest). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "install dependencies"
./ci/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings (every crate, the benchmark tests/bench included)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (debug binaries and examples used by the integration tests)"
cargo build --workspace --all-targets --locked

step "guest image"
./ci/build-guest.sh

step "Cloud Hypervisor test guest (tests/vnetguest)"
./ci/build-vnetguest.sh

step "tests"
# Integration tests start real guests and busy-polling peers: keep them from fighting over
# the two cores by running test binaries with limited parallelism.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --test-threads "${VSWITCH_TEST_THREADS:-2}"
else
  cargo test --workspace --locked --no-fail-fast -- --test-threads "${VSWITCH_TEST_THREADS:-2}"
fi

step "mutation: the delivery check disabled, the tests guarding it must fail"
./ci/mutation.sh

step "fuzz: each target for ${VSWITCH_FUZZ_SECONDS:-60}s from its corpus (installs cargo-fuzz if missing)"
./ci/fuzz.sh

step "done"
