#!/usr/bin/env bash
# Measures which capabilities Vigil needs (docs/deploying.md, "Privileges"):
# runs `vigil events --source ebpf` as root with its capability bounding set
# cut to the DaemonSet's list (as `drop: ALL` + `add:` does in a container),
# then with each capability of that list removed in turn, and reports what
# still works:
#   ebpf      the eBPF source loaded (not an error, no fallback);
#   exec      a marker exec was reported, with its executable and argv;
#   ancestry  its parent (this script's shell, started before the daemon,
#             so known from the /proc scan) carries its executable;
#   proc      the process connector (the fallback without eBPF) starts;
#   nice      `vigil run`'s dispatching thread got its nice value (no
#             refusal logged).
# usage: scripts/capabilities.sh        (as root; needs setpriv, util-linux)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "capabilities.sh: run as root" >&2; exit 1; }
vigil=target/release/vigil
[ -x "$vigil" ] || cargo build --release --bin vigil
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The DaemonSet's list, read from the manifest.
listed=$(grep -o 'add: \[.*\]' engine/deploy/kubernetes/vigil.yaml | tr -d '[]",' | sed 's/add: //' | tr 'A-Z' 'a-z')

probe() { # name caps...
    local name=$1
    shift
    local set=-all
    for c in "$@"; do set="$set,+$c"; done
    local marker="vigil-cap-probe-$RANDOM$RANDOM"
    RUST_LOG=info setpriv --bounding-set="$set" --inh-caps=-all -- \
        "$vigil" events --source ebpf --kind process-exec > "$work/out" 2> "$work/err" &
    pid=$!
    # Until it is ready (it logs the source) or gone.
    for _ in $(seq 100); do
        grep -q "source ready\|eBPF source\|programs attached\|events follow\|error" "$work/err" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    sh -c 'true' "$marker" || true
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
    local ebpf=no exec=no ancestry=no nice=yes proc=no
    grep -qi "error" "$work/err" || ebpf=yes
    grep -qi "fall\(s\|ing\) back\|falling back to" "$work/err" && ebpf=no
    local line
    line=$(grep -F "$marker" "$work/out" | head -1 || true)
    if [ -n "$line" ]; then
        echo "$line" | grep -q '"exe":"/[^"]' && exec=yes
        echo "$line" | python3 -c '
import json, sys
e = json.loads(sys.stdin.read())
anc = (e.get("process") or {}).get("ancestry") or []
sys.exit(0 if anc and anc[0].get("exe") else 1)' && ancestry=yes
    fi
    RUST_LOG=info timeout 3 setpriv --bounding-set="$set" --inh-caps=-all -- \
        "$vigil" events --source proc > /dev/null 2> "$work/proc-err" || true
    grep -qi "error" "$work/proc-err" || proc=yes
    mkdir -p "$work/rules"
    RUST_LOG=info timeout 4 setpriv --bounding-set="$set" --inh-caps=-all -- \
        "$vigil" run --source ebpf --rules "$work/rules" > /dev/null 2> "$work/run-err" || true
    grep -q "cannot set the thread's nice value" "$work/run-err" && nice=no
    printf '%-28s ebpf=%-3s exec=%-3s ancestry=%-3s proc=%-3s nice=%-3s\n' "$name" "$ebpf" "$exec" "$ancestry" "$proc" "$nice"
    if [ "$ebpf" = no ]; then grep -i "error\|warn" "$work/err" | head -3 | sed 's/^/    /'; fi
}

echo "listed: $listed (kernel $(uname -r))"
# shellcheck disable=SC2086
probe "all listed" $listed
for drop in $listed; do
    keep=$(for c in $listed; do [ "$c" = "$drop" ] || echo "$c"; done)
    # shellcheck disable=SC2086
    probe "without $drop" $keep
done
