#!/usr/bin/env bash
# Sets up, builds and runs the Vigil daemon with the bundled rules on this
# machine. Alerts go to stdout (JSON lines), logs to stderr; Ctrl-C stops it.
#
# The source is chosen automatically: eBPF where it loads (not in this build
# yet), else the kernel's process connector (needs root), else — without
# privileges — a replay of the bundled demo recording at its recorded pace.
# Extra arguments go to `vigil run` (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
./scripts/build-rules.sh >/dev/null
cargo build --release -p vigil-engine

args=(run --rules target/rules)
if [ "$(id -u)" -ne 0 ]; then
    echo "run: not root: the live sources need root; replaying tests/fixtures/bundled.jsonl instead" >&2
    args+=(--replay tests/fixtures/bundled.jsonl --realtime)
fi
exec ./target/release/vigil "${args[@]}" "$@"
