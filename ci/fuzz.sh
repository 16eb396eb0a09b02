#!/usr/bin/env bash
# Coverage-guided fuzzing of the switch's hostile-input parsers (docs/fuzzing.md): cargo-fuzz
# (libFuzzer) on the stable toolchain, without a sanitizer (`--sanitizer none`: the sanitizers
# need nightly; panics, overflow checks, faults and hangs are still caught).
#
#   ci/fuzz.sh [TARGET...]            run each target (default: all) for VSWITCH_FUZZ_SECONDS
#                                     (default 60) from its committed corpus; fails on a crash
#   ci/fuzz.sh merge TARGET DIR...    minimize DIR's inputs into tests/fuzz/corpus/TARGET
#
# Installs cargo-fuzz if it is missing. One fuzzing process at a time (no -jobs/-workers): the
# machine's two cores are shared. New inputs go to a scratch directory, never into the repo;
# a crashing input is left in tests/fuzz/targets/artifacts/TARGET/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(desc_chain frame vhost_user ctl_request config)
FUZZ_DIR=tests/fuzz/targets
CARGO_FUZZ_VERSION=0.13.2
secs=${VSWITCH_FUZZ_SECONDS:-60}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

fuzz() { cargo fuzz "$1" --fuzz-dir "$FUZZ_DIR" --sanitizer none "${@:2}"; }

if [ "${1:-}" = merge ]; then
  [ $# -ge 3 ] || { echo "usage: ci/fuzz.sh merge TARGET DIR..." >&2; exit 2; }
  target=$2; shift 2
  fuzz run "$target" "tests/fuzz/corpus/$target" "$@" -- -merge=1 -timeout=30
  exit 0
fi

[ $# -gt 0 ] && TARGETS=("$@")
fuzz build
failed=()
summary=()
for t in "${TARGETS[@]}"; do
  work=$(mktemp -d)
  log="$work/log"
  echo "fuzz: $t for ${secs}s"
  # -timeout: an input running this long is a hang (reported as a crash);
  # -rss_limit_mb: a leak or an unbounded allocation is a crash too.
  if fuzz run "$t" "$work" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t")
    grep -E "^(==|SUMMARY|artifact_prefix|Test unit written)|panicked|Deadly signal|Timeout|out-of-memory" "$log" | head -20 || true
    tail -40 "$log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  summary+=("$(printf '%-12s %-6s %12s executions in %ss' "$t" "$status" "${runs:-?}" "$secs")")
  rm -rf "$work"
done
echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}: the inputs are in $FUZZ_DIR/artifacts/<target>/; reproduce" \
       "with: cargo fuzz run --fuzz-dir $FUZZ_DIR --sanitizer none <target> <input>" >&2
  exit 1
fi
