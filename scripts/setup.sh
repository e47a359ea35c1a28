#!/usr/bin/env bash
# Installs what building and testing Vigil needs on a fresh machine of the
# project's kind (Debian 12, rustup). Idempotent and fast when done already.
set -euo pipefail

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
# Rules build for wasm32-unknown-unknown (the bundled and example rules: no
# WASI, smaller) and wasm32-wasip2 (the test fixtures; what rule authors
# start with).
for target in wasm32-unknown-unknown wasm32-wasip2; do
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "setup: adding the $target target (rules are built for it)"
        rustup target add "$target"
    fi
done

# protoc: the containerd and CRI clients are generated from their .proto
# files at build time (tonic-prost-build).
if ! command -v protoc >/dev/null; then
    echo "setup: installing protobuf-compiler (protoc, for the CRI and containerd clients)"
    as_root=""
    if [ "$(id -u)" != 0 ]; then
        sudo -n true 2>/dev/null || {
            echo "setup: protoc is missing and this user cannot install it: run 'apt-get install protobuf-compiler' as root" >&2
            exit 1
        }
        as_root="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $as_root apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null 2>&1 || {
        $as_root apt-get update -qq
        $as_root apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
    }
fi

# The eBPF programs build for the BPF target with stable rustc's own
# `-Z build-std=core` (engine/build.rs sets RUSTC_BOOTSTRAP for that nested
# build only), which needs the standard library's sources.
if ! rustup component list --installed | grep -q '^rust-src'; then
    echo "setup: adding rust-src (the eBPF programs build core from source)"
    rustup component add rust-src
fi

# bpf-linker links the eBPF programs. It is built against the LLVM inside
# the Rust toolchain (LLVM 22 for rustc 1.95), so no LLVM package is needed:
# its build looks for `libLLVM.so`, which the toolchain ships under a
# versioned name, so a private prefix gets the name as a symlink.
BPF_LINKER_VERSION=0.13.0
if ! bpf-linker --version 2>/dev/null | grep -qx "bpf-linker $BPF_LINKER_VERSION"; then
    sysroot=$(rustc --print sysroot)
    libllvm=$(find "$sysroot/lib" -maxdepth 1 -name 'libLLVM.so.*' | head -n1)
    if [ -z "$libllvm" ]; then
        echo "setup: no libLLVM.so.* in $sysroot/lib; cannot build bpf-linker" >&2
        exit 1
    fi
    prefix=$(mktemp -d)
    trap 'rm -rf "$prefix"' EXIT
    mkdir -p "$prefix/lib"
    ln -s "$libllvm" "$prefix/lib/libLLVM.so"
    echo "setup: installing bpf-linker $BPF_LINKER_VERSION against $(basename "$libllvm") (1-3 minutes)"
    LLVM_PREFIX="$prefix" RUSTFLAGS="-C link-args=-Wl,-rpath,$sysroot/lib" \
        cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22 --locked
fi
