#!/usr/bin/env bash
# Sets up and runs every test on a machine of the project's kind:
#   - unit tests of every crate (engine, event model, SDK, each rule natively);
#   - the end-to-end suite (tests/e2e): real rule components, the real
#     pipeline and `vigil` binary; the proc-connector tests need root and
#     say SKIPPED otherwise;
#   - the plugin SDK quickstart, run from plugin-sdk/README.md as written.
# Everything is built once, in release (tests, benchmarks and the daemon share it).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
./scripts/build-rules.sh
cargo build --release --workspace
cargo test --release --workspace
./scripts/test-quickstart.sh
