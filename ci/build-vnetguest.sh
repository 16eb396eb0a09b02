#!/usr/bin/env bash
# Builds the tiny bare-metal virtio-net guest of the Cloud Hypervisor test (tests/vnetguest) with
# its own Makefile, in a copy of its sources so that the source directory stays clean.
#
#   ci/build-vnetguest.sh [OUTDIR]    (default: build/vnetguest under the repository root)
#
# Produces OUTDIR/vnetguest.elf. make rebuilds only what changed; concurrent callers (parallel
# test processes) are serialised with a lock. Needs gcc, ld and make (ci/install-deps.sh).
set -euo pipefail

die() { echo "build-vnetguest: error: $*" >&2; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SRC=$REPO_ROOT/tests/vnetguest
OUTDIR=${1:-$REPO_ROOT/build/vnetguest}
SOURCES=(Makefile main.c start.S link.ld)

for tool in make gcc ld; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (run ci/install-deps.sh as root)"
done
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
exec 9>"$OUTDIR/.lock"
flock 9

# Copies keep the sources' modification times, so make sees what changed since the last build.
for f in "${SOURCES[@]}"; do
  [ -f "$SRC/$f" ] || die "$SRC/$f missing"
  cp -p "$SRC/$f" "$OUTDIR/$f"
done
make -s -C "$OUTDIR" vnetguest.elf >&2 || die "make failed in $OUTDIR"
echo "build-vnetguest: $OUTDIR/vnetguest.elf" >&2
