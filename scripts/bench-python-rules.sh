#!/usr/bin/env bash
# A rule in Python against the same rule in Rust (crypto-miner, examples/
# and plugin-sdk/python/examples), run by the real daemon over a replay of
# exec events (`vigil replay`, nothing else loaded). Prints, per round:
#   - component size;
#   - load time: compile with an empty cache (cold), and from the cache
#     (warm: deserialize, instantiate, metadata, init), the daemon's
#     "rules loaded took_ms";
#   - peak RSS (GNU time's maximum resident set) of the run with the rule,
#     against a run with no rule: what one rule adds; and with three Python
#     rules (the same rule under three ids), what each more adds;
#   - the rules' CPU per event, from the daemon's "rule figures" (cpu_ms
#     over events_in, summed over the rules), and the run's wall time;
#   - the three rules as one rule pack (vigil_rules.pack): one component,
#     one interpreter.
# Needs scripts/build-rules.sh with the test tools' venv (componentize-py).
#   scripts/bench-python-rules.sh [ROUNDS] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
events=${2:-200000}
vigil=target/release/vigil
rust=target/example-rules/crypto-miner.wasm
py=target/example-rules/crypto-miner-py.wasm
for f in "$vigil" "$rust" "$py"; do
    [ -e "$f" ] || { echo "bench-python-rules: $f is not built (scripts/build-rules.sh)" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Exec events, one in 1,000 a miner; varied argv.
python3 scripts/miner-execs.py "$work/execs.jsonl" "$events"

# Three Python rules: the same rule under three ids.
mkdir -p "$work/py3"
for i in 1 2 3; do
    sed "s/id=\"crypto-miner-py\"/id=\"crypto-miner-py-$i\"/" plugin-sdk/python/examples/crypto_miner.py >"$work/py3/crypto_miner_$i.py"
    PYTHONPATH=plugin-sdk/python target/tools/py/bin/python -m vigil_rules build "$work/py3/crypto_miner_$i.py" \
        -o "$work/py3/crypto-miner-py-$i.wasm" >/dev/null
    rm "$work/py3/crypto_miner_$i.py"
done

# The same three rules as one rule pack (vigil_rules.pack): one component.
python3 - plugin-sdk/python/examples/crypto_miner.py "$work/py3/crypto_miner_pack.py" <<'PY'
import sys
source = open(sys.argv[1]).read()
head, body = source.split("@rule(", 1)
head = head.replace("import Alert, EventKind, rule", "import Alert, EventKind, pack, rule")
rules = [("@rule(" + body).replace('id="crypto-miner-py"', f'id="crypto-miner-py-{i}"')
         .replace("def crypto_miner(", f"def crypto_miner_{i}(") for i in (1, 2, 3)]
open(sys.argv[2], "w").write(head + "\n".join(rules) + '\npack(id="crypto-miner-pack")\n')
PY
mkdir -p "$work/pack"
PYTHONPATH=plugin-sdk/python target/tools/py/bin/python -m vigil_rules build "$work/py3/crypto_miner_pack.py" \
    -o "$work/pack/crypto-miner-pack.wasm" >/dev/null
rm "$work/py3/crypto_miner_pack.py"

# run NAME RULE... : one replay; prints its figures.
run() {
    local name=$1 dir="$work/rules-$1" cache="$work/cache-$1"
    shift
    rm -rf "$dir" "$cache" && mkdir -p "$dir" "$cache" && chmod 700 "$cache"
    for r in "$@"; do cp "$r" "$dir/"; done
    # A pack's call runs its three rules: 128 events take ~12 ms, past the
    # default 10 ms deadline; the pack is given 100 ms (as its docs say to).
    printf 'cache_dir = "%s"\n[output.stdout]\nenabled = false\n[rules.settings.crypto-miner-pack]\ncall_timeout = "100ms"\n' \
        "$cache" >"$work/vigil.toml"
    for pass in cold warm; do
        local start end
        start=$(date +%s%N)
        /usr/bin/time -f "%M" -o "$work/rss" "$vigil" replay "$work/execs.jsonl" --rules "$dir" \
            --config "$work/vigil.toml" 2>"$work/log" >/dev/null
        end=$(date +%s%N)
        local took rss cpu ev
        took=$(grep -o 'rules loaded.*took_ms=[0-9]*' "$work/log" | grep -o 'took_ms=[0-9]*' | cut -d= -f2)
        rss=$(tail -1 "$work/rss")
        cpu=$(grep 'rule figures' "$work/log" | grep -o 'cpu_ms=[0-9]*' | cut -d= -f2 | paste -sd+ | bc || true)
        ev=$(grep 'rule figures' "$work/log" | grep -o 'events_in=[0-9]*' | head -1 | cut -d= -f2 || true)
        printf '  %-10s %-4s load %5s ms  peak RSS %7s KiB  run %6s ms  rules CPU %6s ms  per event %s ns\n' \
            "$name" "$pass" "$took" "$rss" "$(((end - start) / 1000000))" "${cpu:-0}" \
            "$([ -n "$ev" ] && [ "${ev:-0}" -gt 0 ] && echo "$((${cpu:-0} * 1000000 / ev))" || echo -)"
    done
}

echo "component size: rust $(stat -c %s "$rust") bytes, python $(stat -c %s "$py") bytes"
echo "events: $events execs (1 in 1,000 a miner)"
for round in $(seq "$rounds"); do
    echo "round $round:"
    run none
    run rust "$rust"
    run python "$py"
    run python×3 "$work"/py3/*.wasm
    run pack-of-3 "$work/pack/crypto-miner-pack.wasm"
done
