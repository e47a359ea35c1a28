#!/usr/bin/env bash
# Figures for the hostile-rule hardening (BENCHMARKS.md, "Hostile rules"):
#   - throughput: `vigil run --realtime --replay` of 200,000 exec events
#     offered at 1,000,000/s (flat out, but a live source: CPU budgets on),
#     with two good rules (echo: an alert per event; crypto-miner), alone and
#     beside tests/rules/hostile in `slow` mode (6 ms of CPU per batch, within
#     its deadline), with the CPU budget off ("0s", as before it existed) and
#     at its default; events/s and each good rule's alerts (echo's are capped by
#     dispatch.max_alerts_per_sec, 50,000/s, above ~50,000 events/s);
#   - contention (root): the e2e test that runs a heavy but healthy rule
#     (3 ms per call, 10 ms deadline) beside 4 busy loops per core run as
#     nobody, on wall-clock then CPU-time deadlines; faults by rule.
# usage: scripts/bench-hostile.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
[ -f target/test-rules/hostile.wasm ] || ./scripts/build-rules.sh
cargo build --release --bin vigil
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/stream.jsonl" <<'EOF'
import sys
t0 = 1_700_000_000_000_000_000
with open(sys.argv[1], "w") as f:
    f.write('{"vigil-replay": 1}\n')
    for i in range(200_000):
        if i % 100 == 50:
            exe, argv = "/tmp/xmrig", '["xmrig","-o","stratum+tcp://pool.example:3333"]'
        else:
            exe, argv = "/bin/ok", '["ok"]'
        pid = 1000 + i % 30_000
        f.write('{"kind":"process-exec","time_ns":%d,"process":{"pid":%d,"tgid":%d,"comm":"x","exe":"%s","argv":%s}}\n'
                % (t0 + i * 1000, pid, pid, exe, argv))
EOF
mkdir -p "$work/good" "$work/slow"
cp target/test-rules/echo.wasm target/example-rules/crypto-miner.wasm "$work/good/"
cp "$work"/good/*.wasm target/test-rules/hostile.wasm "$work/slow/"
for budget in 0s 500ms; do
    cat > "$work/budget-$budget.toml" <<EOF
cache_dir = "$work/cache"
[alerts]
dedup_window = "0s"
rule_rate = 0
global_rate = 0
[dispatch]
cpu_budget = "$budget"
[rules.settings.hostile]
config = { mode = "slow", busy_us = 6000 }
EOF
done

echo "round setup budget events/s echo-alerts miner-alerts"
for round in $(seq "$rounds"); do
    for setup in "good 500ms" "slow 0s" "slow 500ms"; do
        set -- $setup
        start=$(date +%s%N)
        target/release/vigil run --realtime --replay "$work/stream.jsonl" --rules "$work/$1" \
            --config "$work/budget-$2.toml" > "$work/out.json" 2> "$work/err.log"
        end=$(date +%s%N)
        echo "$round $1 $2 $((200000 * 1000000000 / (end - start))) $(grep -c '"rule":"echo"' "$work/out.json") $(grep -c '"rule":"crypto-miner"' "$work/out.json")"
    done
done

if [ "$(id -u)" = 0 ]; then
    for round in $(seq "$rounds"); do
        for clock in wall cpu; do
            VIGIL_CONTENTION_CLOCK=$clock cargo test --release -p vigil-engine --test e2e -- \
                hostile::cpu_contention --test-threads 1 --nocapture 2>&1 | grep -oE "contention, .*" || true
        done
    done
else
    echo "contention: SKIPPED (needs root to run the busy loops as nobody)"
fi
