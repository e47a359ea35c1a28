//! Live process and cgroup events from Vigil's eBPF programs
//! (`engine-ebpf/`, embedded in the binary at build time).
//!
//! Opening the source reads the struct offsets the programs need from the
//! kernel's BTF, loads the programs with those offsets and the configured
//! ring buffer size, attaches them to the BTF tracepoints
//! `sched_process_{exec,fork,exit}` and `cgroup_{mkdir,rmdir}`, and only
//! then scans /proc into the process tree, so that no process falls in
//! between. BTF tracepoints attach by BTF id, not through tracefs, so
//! tracefs need not be mounted; it is mounted if absent all the same
//! (`source.ebpf.mount_tracefs`), for the tools operators use beside an
//! eBPF agent ([`tracefs`]).
//!
//! By role: [`load`] loads and attaches the programs, [`read`] is the
//! reading loop (drop counters, figures, drain at stop), [`records`] turns
//! records into events through the enrichment stage, [`filter`] keeps the
//! in-kernel kind filter equal to what rules want; [`offsets`] reads the
//! kernel's struct offsets, [`tracefs`] mounts tracefs.

pub(crate) mod error;
mod exec;
mod filter;
mod load;
mod offsets;
mod read;
pub(crate) mod records;
pub(crate) mod tracefs;

use std::time::{Duration, Instant};

pub use error::EbpfError;
pub use load::built_in;
pub use offsets::{HIDE_FIELD_ENV, VMLINUX_BTF, read_offsets};
pub use read::{EbpfStats, EbpfStatsHandle};

use super::{EventSender, Interest, Source, SourceError, Stop};
use crate::config::EbpfConfig;
use crate::enrich::Enricher;
use read::Reader;

pub struct EbpfSource {
    reader: Reader,
    inline_dispatch: bool,
    open_time: Duration,
}

impl EbpfSource {
    /// Loads and attaches the programs, then scans /proc and the cgroup
    /// tree into `enricher` (so that no process falls in between). Fails
    /// with a clear error (and attaches nothing) when the kernel lacks what
    /// they need.
    pub fn open(config: &EbpfConfig, mut enricher: Enricher) -> Result<Self, EbpfError> {
        let started = Instant::now();
        let hierarchies = enricher.hierarchies().clone();
        let loaded = load::load(config, hierarchies.v1.as_ref())?;
        crate::release_freed_memory();
        let attached = started.elapsed();
        let processes = enricher.scan();
        let open_time = started.elapsed();
        tracing::info!(
            attach_ms = attached.as_secs_f64() * 1e3,
            scan_ms = (open_time - attached).as_secs_f64() * 1e3,
            processes,
            cgroups = enricher.cgroup_stats().cgroups,
            containers = enricher.cgroup_stats().containers,
            cgroup_layout = %hierarchies.layout(),
            cgroup_v1 = hierarchies.v1.as_ref().map_or("none", |h| h.controller.as_str()),
            ring_buffer = %config.ring_buffer,
            "eBPF programs attached"
        );
        let reader = Reader {
            loaded,
            enricher,
            mode: config.filter,
            wakeup_delay: config.wakeup_delay,
            stats: Default::default(),
        };
        Ok(EbpfSource { reader, inline_dispatch: config.inline_dispatch, open_time })
    }

    /// How long loading, attaching and the /proc scan took.
    pub fn open_time(&self) -> Duration {
        self.open_time
    }

    /// Processes in the tree (after the /proc scan, before running).
    pub fn tree_len(&self) -> usize {
        self.reader.enricher.tree.len()
    }

    /// Where the source publishes its counts: every second while it runs,
    /// and the final ones when it stops.
    pub fn stats(&self) -> EbpfStatsHandle {
        self.reader.stats.clone()
    }
}

impl Source for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn dispatches_inline(&self) -> bool {
        self.inline_dispatch
    }

    fn run(self: Box<Self>, out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| SourceError::Io("starting the eBPF source's runtime", e))?;
        runtime.block_on(self.reader.run(out, stop, interest))
    }
}
