#!/usr/bin/env bash
# Sets up, builds and runs the Vigil daemon with the bundled rules on this
# machine. Alerts go to stdout (JSON lines), logs to stderr; Ctrl-C stops it.
#
# The source is chosen automatically: eBPF where it loads (root, a kernel
# with BTF), else the kernel's process connector, else (where neither can
# start, e.g. unprivileged on Linux < 6.6) a replay of the bundled demo
# recording at its recorded pace.
# Extra arguments go to `vigil run` (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

export VIGIL_REQUIRE_EBPF=1
./scripts/setup.sh
./scripts/build-rules.sh >/dev/null
cargo build --release -p vigil-engine

# auto: eBPF, else the kernel's process connector (root, or anyone on Linux >= 6.6),
# else the bundled demo recording at its recorded pace.
exec ./target/release/vigil run --rules target/rules \
    --source auto --replay tests/fixtures/bundled.jsonl --realtime "$@"
