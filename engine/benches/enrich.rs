//! Enrichment cost on the hot path, printed (BENCHMARKS.md keeps it):
//!
//!     cargo bench -p vigil-engine --bench enrich
//!
//! What the eBPF source's decoder does per event to attach its container
//! and pod (`Enricher::contextualize`, the code the live sources run): look up the
//! cgroup id among 2,000 known cgroups (1,000 of them containers' under
//! pods) and share their context (`Arc` clones), then, with the watchers'
//! cache, the runtime's description. Also the one-time cost per new cgroup:
//! parsing its path.

use std::hint::black_box;
use std::time::Instant;

use vigil_engine::config::EbpfConfig;
use vigil_engine::enrich::Enricher;
use vigil_engine::enrich::cgroup_path::container_of;
use vigil_engine::enrich::cgroups::{CgroupIds, Cgroups};
use vigil_engine::enrich::containers::ContainerCache;
use vigil_engine::enrich::hold::HoldLimits;
use vigil_engine::event::{Event, EventKind};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut cgroups = Cgroups::new(u64::MAX);
    let paths: Vec<String> = (0..1000u64)
        .flat_map(|i| {
            [
                format!("/kubepods/burstable/pod6b1c7f0e-3a2d-4c5b-9e8f-{i:012x}/{:064x}", i * 7919 + 1),
                format!("/system.slice/service-{i}.service"),
            ]
        })
        .collect();
    let cache = ContainerCache::new();
    for (i, p) in paths.iter().enumerate() {
        cgroups.mkdir(i as u64 + 1, p);
        if let Some(c) = cgroups.get(i as u64 + 1).and_then(|ctx| ctx.container.clone()) {
            let mut full = (*c).clone();
            full.name = format!("app-{i}");
            full.image = "registry.local/team/app:1.0".into();
            full.labels = vec![("app".into(), format!("app-{i}")), ("team".into(), "payments".into())];
            let pod = vigil_engine::event::Pod {
                name: format!("app-{i}"),
                namespace: "shop".into(),
                uid: format!("6b1c7f0e-3a2d-4c5b-9e8f-{i:012x}"),
                ..Default::default()
            };
            cache.insert(full, Some(pod));
        }
    }
    let mut enricher = Enricher::new(&EbpfConfig::default());
    enricher.cgroups = cgroups;
    let n = 10_000_000u64;
    let mut events: Vec<Event> = (0..1024).map(|_| Event::new(EventKind::ProcessExec)).collect();
    println!("# Enrichment on the hot path");
    for with_metadata in [false, true] {
        if with_metadata {
            let cgroups = std::mem::replace(&mut enricher.cgroups, Cgroups::new(u64::MAX));
            enricher = Enricher::new(&EbpfConfig::default()).with_containers(cache.clone(), HoldLimits::default());
            enricher.cgroups = cgroups;
        }
        let mut medians = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            for i in 0..n {
                // Spread over the known cgroups, as a busy host's execs would be.
                let id = (i * 2_654_435_761) % 2000 + 1;
                let slot = &mut events[(i & 1023) as usize];
                let e = std::mem::replace(slot, Event::new(EventKind::ProcessExec));
                // Every container is described: nothing is held.
                *slot = enricher.contextualize(CgroupIds { v2: id, v1: 0 }, e).expect("not held");
            }
            medians.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
        black_box(&events);
        medians.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let what = if with_metadata {
            "+ the runtime's metadata and pod (cache by id)"
        } else {
            "container id and pod from the cgroup"
        };
        println!("- {what}: {:.1} ns/event (median of 5 x 10M)", medians[2]);
    }
    let start = Instant::now();
    let rounds = 200u64;
    for _ in 0..rounds {
        for p in &paths {
            black_box(container_of(black_box(p)));
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds * paths.len() as u64) as f64;
    println!("- parsing a cgroup path (once per new cgroup): {per:.1} ns/path");
    let s = enricher.cgroup_stats();
    println!("- {} cgroups known, {} of them containers", s.cgroups, s.containers);
}
