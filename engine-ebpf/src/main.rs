//! Vigil's eBPF programs: BTF tracepoints on process exec, fork and exit and
//! on cgroup mkdir/rmdir, writing the records of `vigil-ebpf-common` into
//! one ring buffer. Each program is a thin wrapper around a `try_*`
//! function. Nothing is dropped silently: an event that does not fit in the
//! ring buffer, or whose task cannot be read, is counted by reason in the
//! per-CPU `COUNTERS` map, which the daemon turns into `events-lost` events.
//!
//! Struct field offsets come from the daemon (`OFFSETS`, read from the
//! running kernel's BTF); the programs emit nothing until they are set.
//! Built for any other target than BPF this is an empty program, so
//! workspace-wide `cargo build` and `clippy` work.

#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
