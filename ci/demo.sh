#!/usr/bin/env bash
# The main job: set up what is missing, build, and run the demo.
# (For now: build and show the CLI. The real-guest demo replaces this.)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/install-deps.sh
cargo build --release --locked -p vswitch
./target/release/vswitch --help
