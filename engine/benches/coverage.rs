//! Enrichment coverage, printed (BENCHMARKS.md keeps it). As root:
//!
//!     cargo bench -p vigil-engine --bench coverage [-- CONTAINERS_PER_RUNTIME]
//!
//! Starts Docker and Podman on private sockets (scripts/runtimes.sh), the
//! eBPF source with both runtimes' watchers and the hold queue, then starts
//! containers in a burst, half in each runtime, all at once. Each runs
//! `/bin/sh -c "/bin/true MARK-child; ..." MARK`: its entrypoint exec and a
//! child exec. Reports the share of those execs delivered with the full
//! container context (name and image from the runtime, not just the id
//! from the cgroup), how many were held and for how long, and the delay
//! from the kernel's timestamp to the source's output (p50/p99).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_engine::config::EbpfConfig;
use vigil_engine::enrich::Enricher;
use vigil_engine::enrich::containers::ContainerCache;
use vigil_engine::enrich::hold::{HoldLimits, UNRESOLVED_LABEL};
use vigil_engine::event::{Event, EventKind};
use vigil_engine::pipeline::spawn_source;
use vigil_engine::sources::ebpf::EbpfSource;
use vigil_engine::sources::{Interest, Stop};
use vigil_engine::watchers::{self, DockerApi, Lifecycle};

/// A runtime started by scripts/runtimes.sh, stopped when dropped.
struct Runtime {
    name: &'static str,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/runtimes.sh")
}

impl Runtime {
    fn start(name: &'static str) -> Runtime {
        let r = Runtime { name, dir: tempfile::tempdir().unwrap() };
        let ok = Command::new(script()).arg(format!("start-{name}")).arg(r.dir.path()).status().unwrap().success();
        assert!(ok, "{name} did not start (scripts/runtimes.sh install first)");
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join(format!("{}.sock", self.name))
    }

    fn cli(&self) -> Command {
        let mut c;
        if self.name == "podman" {
            c = Command::new("podman");
            c.arg("--remote").arg("--url").arg(format!("unix://{}", self.socket().display()));
        } else {
            c = Command::new("docker");
            c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()));
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg(format!("stop-{}", self.name)).arg(self.dir.path()).status();
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("coverage: SKIPPED (needs root: eBPF and container runtimes)");
        return;
    }
    let per_runtime: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(16);
    let runtimes = [Runtime::start("docker"), Runtime::start("podman")];
    let cache = ContainerCache::new();
    let stop_watchers = Stop::new();
    let (lifecycle_tx, _lifecycle_rx) = crossbeam_channel::bounded(1024);
    let mut watchers = Vec::new();
    for (r, runtime) in
        runtimes.iter().zip([vigil_engine::event::Runtime::Docker, vigil_engine::event::Runtime::Podman])
    {
        let events = vigil_engine::sources::EventSender::new(lifecycle_tx.clone(), r.name);
        let api = DockerApi::new(r.socket(), runtime);
        let (thread, status) =
            watchers::spawn(api, cache.clone(), Lifecycle::new(Some(events)), stop_watchers.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !status.is_up() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        watchers.push(thread);
    }
    let config = EbpfConfig::default();
    let enricher = Enricher::new(&config).with_containers(cache.clone(), HoldLimits::default());
    let source = EbpfSource::open(&config, enricher).unwrap();
    let stats = source.stats();
    let stop = Stop::new();
    let running = spawn_source(Box::new(source), 4096, stop.clone(), Interest::all()).unwrap();

    let run_id = std::process::id();
    let mark = |r: &str, i: usize| format!("vigil-cov-{run_id}-{r}-{i}");
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..per_runtime {
        for r in &runtimes {
            let m = mark(r.name, i);
            let script = format!("/bin/true {m}-child; sleep 2");
            let mut c = r.cli();
            c.args([
                "run",
                "-d",
                "--name",
                &m,
                "--network",
                "none",
                "vigil-busybox:test",
                "/bin/sh",
                "-c",
                &script,
                &m,
            ]);
            clients.push(c.spawn().unwrap());
        }
    }
    let failed = clients.iter_mut().map(|c| c.wait().unwrap()).filter(|s| !s.success()).count();
    let burst = started.elapsed();

    // Every marker exec, with when it came out of the source.
    let wanted = per_runtime * runtimes.len() * 2;
    let mut seen: Vec<(Event, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let is_marked = |e: &Event| {
        e.kind == EventKind::ProcessExec
            && e.process.as_ref().is_some_and(|p| {
                (p.argv.first().map(String::as_str) == Some("/bin/sh")
                    || p.argv.first().map(String::as_str) == Some("/bin/true"))
                    && p.argv.iter().any(|a| a.starts_with(&format!("vigil-cov-{run_id}-")))
            })
    };
    while seen.len() < wanted && Instant::now() < deadline {
        if let Ok(batch) = running.events.recv_timeout(Duration::from_millis(50)) {
            let now = vigil_engine::time::now_ns();
            seen.extend(batch.into_iter().filter(is_marked).map(|e| (e, now)));
        }
    }
    stop.stop();
    while let Ok(batch) = running.events.recv() {
        let now = vigil_engine::time::now_ns();
        seen.extend(batch.into_iter().filter(is_marked).map(|e| (e, now)));
    }
    running.thread.join().unwrap().unwrap();
    stop_watchers.stop();
    for w in watchers {
        let _ = w.join();
    }
    let hold = stats.lock().unwrap().clone().map(|s| s.hold).unwrap_or_default();

    let full = |e: &Event| {
        e.container.as_ref().is_some_and(|c| {
            !c.name.is_empty() && !c.image.is_empty() && !c.labels.iter().any(|(k, _)| k == UNRESOLVED_LABEL)
        })
    };
    let first = |e: &Event| e.process.as_ref().is_some_and(|p| p.argv[0] == "/bin/sh");
    let entry: Vec<_> = seen.iter().filter(|(e, _)| first(e)).collect();
    let entry_full = entry.iter().filter(|(e, _)| full(e)).count();
    let all_full = seen.iter().filter(|(e, _)| full(e)).count();
    let mut delays: Vec<u64> = seen.iter().map(|(e, at)| at.saturating_sub(e.time_ns) / 1_000).collect();
    delays.sort_unstable();

    println!(
        "# Enrichment coverage: a burst of {} containers ({per_runtime} Docker + {per_runtime} Podman)",
        per_runtime * 2
    );
    println!("- burst: started in {:.1} s ({failed} client(s) failed)", burst.as_secs_f64());
    println!(
        "- execs with full container context: {all_full}/{} ({:.1}%), of which entrypoints (first exec): {entry_full}/{}",
        seen.len(),
        100.0 * all_full as f64 / seen.len().max(1) as f64,
        entry.len()
    );
    println!("- expected execs: {wanted} (seen {})", seen.len());
    println!(
        "- held until described: {} events ({} timed out, {} overflowed); hold time p50 < {} µs, p99 < {} µs",
        hold.held,
        hold.timed_out,
        hold.overflowed,
        hold.quantile_us(0.5),
        hold.quantile_us(0.99)
    );
    println!(
        "- kernel to source output, these execs: p50 {} µs, p99 {} µs, max {} µs",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(0)
    );
    for runtime in [vigil_engine::event::Runtime::Docker, vigil_engine::event::Runtime::Podman] {
        let mut d: Vec<u64> = seen
            .iter()
            .filter(|(e, _)| e.container.as_ref().is_some_and(|c| c.runtime == runtime))
            .map(|(e, at)| at.saturating_sub(e.time_ns) / 1_000)
            .collect();
        d.sort_unstable();
        println!(
            "  - {}: p50 {} µs, p99 {} µs ({} execs)",
            runtime.name(),
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            d.len()
        );
    }
}
