#!/usr/bin/env bash
# Tools only the tests use, installed idempotently into target/tools:
#   - promtool (from Debian's `prometheus` package, unpacked, not installed:
#     installing the package would start a Prometheus server), which checks
#     the daemon's /metrics output;
#   - nats-server (from Debian's `nats-server` package, unpacked the same
#     way: the tests start it themselves, with JetStream, on loopback);
#   - a Python venv (target/tools/py) with componentize-py and pytest, from
#     PyPI: the Python SDK's tests and the Python rules of the conformance
#     suite;
#   - Docker and busybox (scripts/runtimes.sh install), for the container tests.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/tools
mkdir -p "$tools"
if [ ! -x "$tools/promtool" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup-test-tools: not root: skipping promtool (the metrics test says SKIPPED)" >&2
        exit 0
    fi
    echo "setup-test-tools: fetching promtool from Debian's prometheus package"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        apt-get update -qq
        (cd "$work" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/promtool" "$tools/promtool"
fi
"$tools/promtool" --version 2>&1 | head -n1

if [ ! -x "$tools/nats-server" ]; then
    echo "setup-test-tools: fetching nats-server from Debian's nats-server package"
    nats_work=$(mktemp -d)
    trap 'rm -rf "${work:-}" "$nats_work"' EXIT
    if ! (cd "$nats_work" && apt-get download nats-server >/dev/null 2>&1); then
        apt-get update -qq
        (cd "$nats_work" && apt-get download nats-server >/dev/null)
    fi
    dpkg-deb -x "$nats_work"/nats-server_*.deb "$nats_work/root"
    install -m 0755 "$nats_work/root/usr/sbin/nats-server" "$tools/nats-server"
fi
"$tools/nats-server" --version

if [ ! -x "$tools/py/bin/componentize-py" ] || [ ! -x "$tools/py/bin/pytest" ]; then
    echo "setup-test-tools: a venv with componentize-py and pytest (PyPI)"
    python3 -m venv "$tools/py"
    "$tools/py/bin/pip" install -q "componentize-py==0.25.1" "pytest>=8"
fi
"$tools/py/bin/componentize-py" --version

# Docker (with containerd and runc) for the container tests, as root.
if [ "$(id -u)" = 0 ]; then
    ./scripts/runtimes.sh install
fi
