#!/usr/bin/env bash
# The eBPF source's figures (BENCHMARKS.md): an exec storm against bpftrace
# in the same run, CPU, load + attach time, latency, and the process tree
# around a fork/exit storm. Needs root. Installs bpftrace (Debian) if absent
# and mounts tracefs for it (Vigil itself needs neither).
# Extra arguments go to the bench (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-ebpf: needs root" >&2
    exit 1
fi
if ! command -v bpftrace >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y bpftrace
fi
if ! mountpoint -q /sys/kernel/tracing; then
    mount -t tracefs nodev /sys/kernel/tracing
fi
export VIGIL_REQUIRE_EBPF=1
./scripts/setup.sh
./scripts/build-rules.sh >/dev/null
# The bench turns the kernel's per-program run-time statistics on for its
# `costs` phase only (BPF_ENABLE_STATS): they slow every program run.
cargo bench -p vigil-engine --bench exec_storm -- "$@"
