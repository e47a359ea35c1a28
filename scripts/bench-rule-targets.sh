#!/usr/bin/env bash
# One Rust rule built for wasm32-unknown-unknown (how the bundled and
# example rules are built: no WASI) against the same rule built for
# wasm32-wasip2, run by the real daemon over a replay of exec events
# (`vigil replay`, the rule alone, stdout off), alternating. Prints per run:
# component size, load time from the compile cache (warm), peak RSS, the
# rule's CPU per event (the daemon's "rule figures": cpu_ms / events_in).
#   scripts/bench-rule-targets.sh [ROUNDS] [EVENTS] [EXAMPLE-RULE]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
events=${2:-300000}
rule=${3:-crypto-miner}
target_dir="${CARGO_TARGET_DIR:-target}"
vigil=$target_dir/release/vigil
[ -x "$vigil" ] || { echo "bench-rule-targets: $vigil is not built (cargo build --release)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

crate=vigil-example-rule-$rule
file=vigil_example_rule_${rule//-/_}.wasm
for t in wasm32-unknown-unknown wasm32-wasip2; do
    cargo build -q --profile rule --target "$t" -p "$crate"
    mkdir -p "$work/$t"
    python3 scripts/strip-wasm.py "$target_dir/$t/rule/$file" "$work/$t/$rule.wasm"
done

# Exec events, one in 1,000 a miner; varied argv.
python3 scripts/miner-execs.py "$work/execs.jsonl" "$events"

run() { # target
    local cache="$work/cache-$1"
    mkdir -p "$cache" && chmod 700 "$cache"
    printf 'cache_dir = "%s"\n[output.stdout]\nenabled = false\n' "$cache" >"$work/vigil.toml"
    /usr/bin/time -f "%M" -o "$work/rss" "$vigil" replay "$work/execs.jsonl" --rules "$work/$1" \
        --config "$work/vigil.toml" 2>"$work/log" >/dev/null
    local took cpu ev
    took=$(grep -o 'rules loaded.*took_ms=[0-9]*' "$work/log" | grep -o 'took_ms=[0-9]*' | cut -d= -f2)
    cpu=$(grep 'rule figures' "$work/log" | grep -o 'cpu_ms=[0-9]*' | cut -d= -f2)
    ev=$(grep 'rule figures' "$work/log" | grep -o 'events_in=[0-9]*' | cut -d= -f2)
    printf '  %-22s %7s bytes  load %3s ms  peak RSS %6s KiB  CPU per event %s ns\n' \
        "$1" "$(stat -c %s "$work/$1/$rule.wasm")" "$took" "$(tail -1 "$work/rss")" "$((cpu * 1000000 / ev))"
}

echo "$rule over $events execs (1 in 1,000 alerting); cpu_ms has 1 ms resolution"
for t in wasm32-unknown-unknown wasm32-wasip2; do run "$t" >/dev/null; done # compile into the caches
for round in $(seq "$rounds"); do
    echo "round $round:"
    run wasm32-unknown-unknown
    run wasm32-wasip2
done
