#!/usr/bin/env bash
# Installs what building and testing Vigil needs on a fresh machine of the
# project's kind (Debian 12, rustup). Idempotent and fast when done already.
set -euo pipefail

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target (rules are built for it)"
    rustup target add wasm32-wasip2
fi
