#!/usr/bin/env bash
# Proves the tests guard the delivery check (docs/architecture.md, "The delivery check"):
# builds the switch with the check disabled (feature mutant-skip-delivery-check: every frame
# admitted) and requires each guarding test below to FAIL. A guard that passes with the check
# gone would prove nothing: the script then fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary:test — one per path the check protects: the pure rule, an end-to-end poisoned FDB,
# a registry snapshot older than a reused port id, and an uplink destination.
GUARDS=(
  forwarding_props:nothing_is_ever_delivered_across_a_refusing_policy
  isolation:a_poisoned_fdb_misroutes_but_never_leaks
  port_churn:a_registry_snapshot_older_than_a_reused_id_never_names_the_new_port
  uplink_seam:an_uplink_gets_only_the_channels_it_carries
)

filter=""
tests=()
for g in "${GUARDS[@]}"; do
  bin=${g%%:*} name=${g#*:}
  filter+="${filter:+ | }(binary(=$bin) & test(=$name))"
  tests+=(--test "$bin")
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "mutation: the delivery check disabled; ${#GUARDS[@]} guarding tests must fail"
cargo nextest run -p vswitch --locked --features mutant-skip-delivery-check "${tests[@]}" \
  --no-fail-fast --test-threads 2 -E "$filter" >"$log" 2>&1 || true

survived=()
for g in "${GUARDS[@]}"; do
  bin=${g%%:*} name=${g#*:}
  if grep -Eq "^ +FAIL .* vswitch::$bin $name\$" "$log"; then
    echo "  caught by $bin::$name"
  else
    survived+=("$g")
  fi
done
if [ ${#survived[@]} -gt 0 ]; then
  tail -40 "$log"
  echo "mutation: survived: with the delivery check gone these tests still pass (or did not run):" >&2
  printf '  %s\n' "${survived[@]}" >&2
  exit 1
fi
echo "mutation: killed by every guard"
