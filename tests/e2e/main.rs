//! Vigil's end-to-end tests: real rule components (built by
//! scripts/build-rules.sh), the real pipeline and the real `vigil` binary.
//! Tests that need root (eBPF, the proc connector, the runtimes) say SKIPPED
//! when not root, through `support::skipped`, which scripts/test.sh lists.
//!
//! Golden files: `VIGIL_BLESS=1 cargo test --release -p vigil-engine --test e2e golden`
//! rewrites them from the current output.

mod support;

mod cgroup_v1;
mod cli;
mod conformance;
mod container_network;
mod deploy;
mod ebpf_source;
mod events_context;
mod exec_facts;
mod golden;
mod hostile;
mod hot_reload;
mod image;
mod kubelet;
mod nats;
mod proc_source;
mod rule_dir_trust;
mod rule_files;
mod rule_scope;
mod runtimes;
mod sandbox;
mod streaming;
mod webhook;
