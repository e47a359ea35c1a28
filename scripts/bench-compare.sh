#!/usr/bin/env bash
# Compares two builds of `vigil` in paired rounds (A B A B ...), for a change
# that should not move the figures (a refactor):
#   - replay: the whole pipeline over a 200,000-event msgpack recording made
#     from tests/fixtures/bundled.jsonl, with the bundled rules (wall and CPU);
#   - storm (root): the daemon's CPU during an exec storm (`xargs -P2` running
#     /bin/true EXECS times), `vigil run --source ebpf` with the bundled rules,
#     and the kernel time its eBPF programs took per exec (their run_time_ns
#     in /proc/<pid>/fdinfo, with kernel.bpf_stats_enabled on for the run);
#   - rss (root): `vigil run --source ebpf` resident memory 6 s after start.
# usage: scripts/bench-compare.sh OLD_VIGIL NEW_VIGIL [ROUNDS] [EXECS]
# OLD_RULES=DIR: the rule directory for the old build (default: target/rules),
# when the rule interface changed between the two.
# Build the old one from another checkout, e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin vigil)
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench-compare.sh OLD_VIGIL NEW_VIGIL [ROUNDS] [EXECS]}
new=${2:?usage: bench-compare.sh OLD_VIGIL NEW_VIGIL [ROUNDS] [EXECS]}
rounds=${3:-5}
execs=${4:-20000}
rules=target/rules
old_rules=${OLD_RULES:-$rules}
[ -f "$rules/declarative.wasm" ] || ./scripts/build-rules.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A recording of 200,000 events: the fixture's events, repeated.
grep '^{"kind"' tests/fixtures/bundled.jsonl > "$work/events"
{
    echo '{"vigil-replay": 1}'
    n=$(wc -l < "$work/events")
    for _ in $(seq $(( 200000 / n + 1 ))); do cat "$work/events"; done
} > "$work/big.jsonl"
# Each build replays its own recording (an older build may not read a
# newer one's fields).
"$old" record --replay "$work/big.jsonl" --out "$work/old.msgpack" 2>/dev/null
"$new" record --replay "$work/big.jsonl" --out "$work/new.msgpack" 2>/dev/null

rules_of() { if [ "$1" = "$old" ]; then echo "$old_rules"; else echo "$rules"; fi; }
recording_of() { if [ "$1" = "$old" ]; then echo "$work/old.msgpack"; else echo "$work/new.msgpack"; fi; }

replay() { # wall_s cpu_s
    /usr/bin/time -f "%e %U %S" "$1" replay "$(recording_of "$1")" --rules "$(rules_of "$1")" 2>&1 >/dev/null | tail -1 |
        awk '{printf "%s %.2f", $1, $2 + $3}'
}

daemon() { # starts `vigil run` ($1), prints its pid once running
    "$1" run --source ebpf --rules "$(rules_of "$1")" >/dev/null 2>"$work/log" &
    local pid=$!
    for _ in $(seq 100); do grep -q "pipeline running" "$work/log" && break; sleep 0.1; done
    echo "$pid"
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Total run time (ns) of the eBPF programs process $1 holds.
bpf_ns() {
    local fd total=0 ns
    for fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "anon_inode:bpf-prog" ] || continue
        ns=$(awk '/^run_time_ns/{print $2}' "/proc/$1/fdinfo/${fd##*/}")
        total=$(( total + ${ns:-0} ))
    done
    echo "$total"
}

storm() { # daemon CPU ms to start and over the storm, kernel ns per exec of its programs
    local pid t0 t1 k0 k1
    pid=$(daemon "$1")
    sleep 0.5
    t0=$(ticks "$pid")
    k0=$(bpf_ns "$pid")
    seq "$execs" | xargs -P2 -n1 /bin/true
    sleep 1
    t1=$(ticks "$pid")
    k1=$(bpf_ns "$pid")
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    local hz
    hz=$(getconf CLK_TCK)
    echo "start $(( t0 * 1000 / hz )) ms, storm $(( (t1 - t0) * 1000 / hz )) ms, bpf $(( (k1 - k0) / execs )) ns/exec"
}

rss() { # KiB, 6 s after start
    local pid kib
    pid=$(daemon "$1")
    sleep 6
    kib=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$kib"
}

echo "replay of 200,000 events, bundled rules: wall s, cpu s (old | new)"
for r in $(seq "$rounds"); do echo "  round $r: $(replay "$old") | $(replay "$new")"; done
if [ "$(id -u)" -ne 0 ]; then
    echo "storm and rss: SKIPPED (need root for the eBPF source)"
    exit 0
fi
stats=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats"; rm -rf "$work"' EXIT
echo "daemon CPU and eBPF program time over a storm of $execs execs (old | new)"
for r in $(seq "$rounds"); do echo "  round $r: $(storm "$old") | $(storm "$new")"; done
echo "resident KiB 6 s after start (old | new)"
for r in $(seq 3); do echo "  round $r: $(rss "$old") | $(rss "$new")"; done
