#!/usr/bin/env bash
# Sets up and runs every test on a machine of the project's kind:
#   - unit tests of every crate (engine, event model, SDK, each rule natively);
#   - the end-to-end suite (tests/e2e): real rule components, the real
#     pipeline and `vigil` binary; the eBPF and proc-connector tests load
#     real programs / sockets and need root (they say SKIPPED otherwise);
#   - webhook delivery against the tests' own receiver on 127.0.0.1 (plain
#     and TLS), the metrics endpoint checked by promtool, the deployment files;
#   - Vigil's image (scripts/image.sh) run by Podman with the DaemonSet's
#     exact pod settings, and a rolling update of it;
#   - the rule interface's conformance suite (a Rust and a Python echo rule
#     through the real host), the Python SDK's own tests (pytest);
#   - the plugin SDKs' quickstarts (Rust and Python), run from their READMEs
#     as written.
# Everything is built once, in release (tests, benchmarks and the daemon share it).
set -euo pipefail
cd "$(dirname "$0")/.."

# The daemon must carry its eBPF programs here: a build without them fails.
export VIGIL_REQUIRE_EBPF=1

./scripts/setup.sh
./scripts/setup-test-tools.sh
./scripts/build-rules.sh
cargo build --release --workspace
# Vigil's image, for the test that runs it with the DaemonSet's privileges.
./scripts/image.sh
# Tests that cannot run here (not root, a tool missing) pass after saying
# SKIPPED; they also write why here, listed at the end.
VIGIL_SKIPPED_LOG=$(mktemp)
export VIGIL_SKIPPED_LOG
trap 'rm -f "$VIGIL_SKIPPED_LOG"' EXIT
cargo test --release --workspace
# The Python SDK's own tests (natively, in the test tools' venv).
PYTHONPATH=plugin-sdk/python:plugin-sdk/python/examples target/tools/py/bin/python -m pytest -q -p no:cacheprovider \
    plugin-sdk/python/tests plugin-sdk/python/examples
./scripts/test-quickstart.sh
if [ -s "$VIGIL_SKIPPED_LOG" ]; then
    echo "test.sh: $(wc -l < "$VIGIL_SKIPPED_LOG") check(s) SKIPPED, not run:"
    sort "$VIGIL_SKIPPED_LOG" | sed 's/^/  /'
else
    echo "test.sh: nothing skipped"
fi
