//! What the kernel sends at all: the programs read a kind mask from the
//! `FILTER` map before building a record, so kinds no rule wants cost the
//! kernel almost nothing (`source.ebpf.filter`).

use aya::maps::{Array, MapData};
use vigil_ebpf_common::{filter, kind as rec};
use vigil_event::KindSet;

use super::records::RECORD_KINDS;
use crate::config::KernelFilter;
use crate::sources::{Interest, Wanted};

/// The `FILTER` map, kept equal to what rules want.
pub struct KernelMask {
    map: Array<MapData, u32>,
    mode: KernelFilter,
    mask: u32,
}

impl KernelMask {
    /// Starts from `rec::ALL_MASK`, which the loader set.
    pub fn new(map: Array<MapData, u32>, mode: KernelFilter) -> Self {
        KernelMask { map, mode, mask: rec::ALL_MASK }
    }

    /// Sets the mask to what `interest` wants now, if it changed.
    pub fn follow(&mut self, interest: &Interest) {
        let wanted = kernel_mask(interest, self.mode);
        if wanted == self.mask {
            return;
        }
        match self.map.set(0, wanted, 0) {
            Ok(()) => {
                tracing::debug!(mask = wanted, "eBPF kernel filter updated");
                self.mask = wanted;
            }
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot update the eBPF kernel filter"),
        }
    }

    /// Whether the kernel sends exit records.
    pub fn sends_exits(&self) -> bool {
        self.mask & (1 << rec::EXIT) != 0
    }
}

/// The kinds the kernel should send: what rules want, plus, in `tree`
/// mode, exec/fork/exit for the process tree (forks brief when no rule
/// wants them: [`filter::FORK_BRIEF`]).
pub fn kernel_mask(interest: &Interest, mode: KernelFilter) -> u32 {
    let wanted = match interest.get() {
        Wanted::Unknown => return rec::ALL_MASK,
        Wanted::Nothing => KindSet::EMPTY,
        Wanted::Kinds(kinds) => kinds,
    };
    let mut mask = 0;
    for (bit, kind) in RECORD_KINDS {
        if wanted.contains(kind) {
            mask |= 1 << bit;
        }
    }
    if mode == KernelFilter::Tree {
        if mask & 1 << rec::FORK == 0 {
            mask |= filter::FORK_BRIEF;
        }
        mask |= 1 << rec::EXEC | 1 << rec::FORK | 1 << rec::EXIT;
    }
    // cgroup and namespace changes are rare and keep container resolution
    // current.
    mask | 1 << rec::CGROUP_MKDIR | 1 << rec::CGROUP_RMDIR | 1 << rec::NAMESPACES
}

#[cfg(test)]
mod tests {
    use vigil_event::EventKind;

    use super::*;

    #[test]
    fn the_mask_follows_what_rules_want() {
        let interest = Interest::all();
        interest.set(Wanted::Kinds(KindSet::from_iter([EventKind::ProcessExec])));
        let cgroups = 1 << rec::CGROUP_MKDIR | 1 << rec::CGROUP_RMDIR | 1 << rec::NAMESPACES;
        assert_eq!(kernel_mask(&interest, KernelFilter::Rules), 1 << rec::EXEC | cgroups);
        assert_eq!(kernel_mask(&interest, KernelFilter::Tree), 0b111 | cgroups | filter::FORK_BRIEF);
        assert_eq!(kernel_mask(&Interest::all(), KernelFilter::Rules), rec::ALL_MASK);
        assert_eq!(kernel_mask(&Interest::all(), KernelFilter::Tree), rec::ALL_MASK, "forks in full when unknown");
        // No rule loaded: only what the tree and container resolution need.
        let nothing = Interest::all();
        nothing.set(Wanted::Nothing);
        assert_eq!(kernel_mask(&nothing, KernelFilter::Tree), 0b111 | cgroups | filter::FORK_BRIEF);
        assert_eq!(kernel_mask(&nothing, KernelFilter::Rules), cgroups);
        assert!(!nothing.wants(EventKind::ProcessExec) && !nothing.wants(EventKind::EventsLost));
    }
}
