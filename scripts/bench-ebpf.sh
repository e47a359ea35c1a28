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
# Per-program kernel run times (fdinfo run_time_ns/run_cnt), restored after.
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats_before"' EXIT
sysctl -qw kernel.bpf_stats_enabled=1
cargo bench -p vigil-engine --bench exec_storm -- "$@"
