//! Load time, exec-event latency and the process tree under a fork storm.

use super::*;

pub(crate) fn load_attach_times() {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let config = EbpfConfig::default();
            let source = EbpfSource::open(&config, Enricher::new(&config)).expect("eBPF source opens");
            let t = source.open_time();
            drop(source);
            t
        })
        .collect();
    times.sort();
    println!(
        "open (BTF offsets + load + attach + /proc scan), 5 runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times[0].as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3
    );
}

/// Latency with events consumed on the reader's thread (inline dispatch,
/// the default: the reader as SCHED_BATCH at nice -5 with the kernel's
/// slice; as SCHED_OTHER with the `--alt-slice` (the default until
/// 2026-12-06) and with the kernel's slice), on a consumer thread with the
/// default priority (`inline_dispatch = false`), and on a consumer thread
/// with the kernel's defaults, alternating.
pub(crate) fn latency_slices(noop: &Path, rate: usize, n: usize, alt: Duration) {
    let default = default_priority();
    let other = Priority { policy: Policy::Other, slice: Duration::ZERO, ..default };
    let alt_label = format!("inline, SCHED_OTHER with a {} µs slice, nice -5", alt.as_micros());
    let variants = [
        (
            "inline on the reader's thread, SCHED_BATCH, the kernel's slice, nice -5 (the default)",
            Consumed::Inline(default),
        ),
        (alt_label.as_str(), Consumed::Inline(Priority { slice: alt, ..other })),
        ("inline, SCHED_OTHER with the kernel's slice, nice -5", Consumed::Inline(other)),
        ("a consumer thread with the default priority", Consumed::Thread(default)),
        (
            "a consumer thread with the kernel's defaults (nice 0)",
            Consumed::Thread(Priority { nice: 0, slice: Duration::ZERO, policy: Policy::Other }),
        ),
    ];
    let mut runs: Vec<Vec<Latency>> = variants.iter().map(|_| Vec::new()).collect();
    for _ in 0..n {
        for (i, (_, consumed)) in variants.iter().enumerate() {
            runs[i].push(latency(noop, rate, EbpfConfig::default(), *consumed));
        }
    }
    for ((label, _), runs) in variants.iter().zip(&mut runs) {
        let each: Vec<String> = runs.iter().map(Latency::summary).collect();
        runs.sort_by_key(|l| l.p99_us);
        println!(
            "latency at {rate} execs/s, wakeup_delay 500 µs, {label}: median p99 {} µs; runs: {}",
            runs[runs.len() / 2].p99_us,
            each.join("; ")
        );
    }
}

pub(crate) struct Latency {
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    pub(crate) n: usize,
    pub(crate) rate: f64,
}

impl Latency {
    pub(crate) fn summary(&self) -> String {
        format!("{} / {} / {} µs ({} execs at {:.0}/s)", self.p50_us, self.p99_us, self.max_us, self.n, self.rate)
    }
}

/// Where the latency is read, standing for the daemon's dispatch.
#[derive(Clone, Copy)]
pub(crate) enum Consumed {
    /// On the source's own thread, which asks for this priority (inline dispatch).
    Inline(Priority),
    /// On a thread of its own that asks for this priority.
    Thread(Priority),
}

/// The storm's exec latencies in `batch`, in ns, as of now.
pub(crate) fn exec_latencies(batch: &[vigil_engine::event::Event], needle: &str, into: &mut Vec<u64>) {
    let now = vigil_engine::time::now_ns();
    for e in batch {
        if e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.exe == needle) {
            into.push(now.saturating_sub(e.time_ns));
        }
    }
}

/// Kernel timestamp of an exec → the event in the consumer's hands, at a
/// paced storm of `rate` execs/s.
pub(crate) fn latency(noop: &Path, rate: usize, config: EbpfConfig, consumed: Consumed) -> Latency {
    let source = EbpfSource::open(&config, Enricher::new(&config)).expect("eBPF source opens");
    let stop = Stop::new();
    let needle = noop.to_string_lossy().into_owned();
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (running, collector) = match consumed {
        Consumed::Inline(priority) => {
            let into = lat.clone();
            let consumer: vigil_engine::sources::Consumer = Box::new(move |batch| {
                exec_latencies(&batch, &needle, &mut into.lock().unwrap());
                Ok(())
            });
            (spawn_source_inline(Box::new(source), consumer, priority, stop.clone(), Interest::all()).unwrap(), None)
        }
        Consumed::Thread(priority) => {
            let running = spawn_source(Box::new(source), 4096, stop.clone(), Interest::all()).unwrap();
            let (events, into) = (running.events.clone(), lat.clone());
            let collector = std::thread::spawn(move || {
                vigil_engine::sched::use_priority("latency collector", priority);
                while let Ok(batch) = events.recv() {
                    exec_latencies(&batch, &needle, &mut into.lock().unwrap());
                }
            });
            (running, Some(collector))
        }
    };
    let s = storm(noop, Shape::Spawn, "latency", rate * 2, Some(rate as f64));
    std::thread::sleep(Duration::from_millis(300));
    stop.stop();
    let events = running.events;
    running.thread.join().unwrap().unwrap();
    drop(events);
    if let Some(c) = collector {
        c.join().unwrap();
    }
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) / 1_000;
    Latency { p50_us: pct(0.5), p99_us: pct(0.99), max_us: pct(1.0), n: lat.len(), rate: s.rate() }
}

/// The tree's size before and after `n` fork+exit pairs (no exec).
pub(crate) fn tree_under_fork_storm(n: usize) {
    let config = EbpfConfig::default();
    let source = EbpfSource::open(&config, Enricher::new(&config)).expect("eBPF source opens");
    let before = source.tree_len();
    let stats = source.stats();
    let stop = Stop::new();
    let running = spawn_source(Box::new(source), 4096, stop.clone(), Interest::all()).unwrap();
    let events = running.events;
    let drain = std::thread::spawn(move || {
        let mut lost = 0;
        while let Ok(batch) = events.recv() {
            lost += batch.iter().filter_map(|e| e.lost.as_ref()).map(|l| l.count).sum::<u64>();
        }
        lost
    });
    let started = Instant::now();
    for _ in 0..n {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe exit in the child.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    let elapsed = started.elapsed();
    // Past the grace period, so exited entries are freed.
    std::thread::sleep(config.exited_grace + Duration::from_secs(1));
    stop.stop();
    running.thread.join().unwrap().unwrap();
    let lost = drain.join().unwrap();
    let s = stats.lock().unwrap().clone().unwrap();
    println!(
        "fork/exit storm: {n} pairs in {:.1} s ({:.0} forks/s), {lost} events lost; tree: {before} nodes before, \
         peak {}, {} after ({} freed after grace, {} evicted early)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        s.tree.peak,
        s.tree.nodes,
        s.tree.freed,
        s.tree.evicted
    );
}
