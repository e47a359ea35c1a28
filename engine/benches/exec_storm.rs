//! The eBPF source under an exec storm, against bpftrace in the same run.
//! Needs root, gcc (for the tiny static program the storm executes) and
//! bpftrace; `scripts/bench-ebpf.sh` installs what is missing and runs it:
//!
//!     cargo bench -p vigil-engine --bench exec_storm [-- --quick]
//!
//! The storm: 4 workers fork+exec a tiny static binary, each exec with a
//! unique argv marker, as fast as they can. Phases on the same storm:
//! no tracer (the baseline rate); bpftrace printing one line per exec
//! (`tracepoint:sched:sched_process_exec`); then for each
//! `source.ebpf.wakeup_delay`: `vigil events --source ebpf --kind
//! process-exec` printing one JSON line per exec (completeness, slowdown),
//! `vigil run --source ebpf` with the bundled rules (the daemon's real job:
//! slowdown, CPU per 10,000 execs/s), and in this process the
//! kernel→user-space latency of exec events at a paced 10,000 execs/s.
//! Then 3 alternating rounds of bpftrace against `vigil run` (defaults, and
//! with the kernel filter in `rules` mode).
//! Then load + attach time, and the process tree's size around a long
//! fork/exit storm.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_engine::config::EbpfConfig;
use vigil_engine::event::EventKind;
use vigil_engine::pipeline::spawn_source;
use vigil_engine::sources::ebpf::EbpfSource;
use vigil_engine::sources::{Interest, Stop};

const WORKERS: usize = 4;

fn main() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("exec_storm: needs root (eBPF, bpftrace); skipped");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let total: usize = if quick { 4_000 } else { 20_000 };
    let latency_rate = if quick { 3_000 } else { 10_000 };
    let dir = tempfile::tempdir().unwrap();
    let noop = build_noop(dir.path());
    println!("exec storm: {total} execs of {} by {WORKERS} workers per phase", noop.display());

    let base = storm(&noop, "base", total, None);
    let bpftrace = traced(&noop, total, base.rate(), Tracer::Bpftrace, None);
    println!("no tracer: {:.0} execs/s", base.rate());
    println!(
        "bpftrace (one line per exec): {:.0} execs/s, slowdown {:.1}%, captured {}/{total}, CPU {:.2} s",
        bpftrace.rate,
        bpftrace.slowdown * 100.0,
        bpftrace.captured,
        bpftrace.cpu_s
    );
    println!();
    println!(
        "| wakeup_delay | vigil events: slowdown | captured | CPU (s) | vigil run: slowdown | CPU per 10k execs/s \
         | latency p50 / p99 / max at {latency_rate} execs/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for delay in ["0s", "250us", "500us", "1ms"] {
        let config = dir.path().join(format!("vigil-{delay}.toml"));
        std::fs::write(&config, format!("[source.ebpf]\nwakeup_delay = \"{delay}\"\n")).unwrap();
        let events = traced(&noop, total, base.rate(), Tracer::VigilEvents, Some(&config));
        let run = traced(&noop, total, base.rate(), Tracer::VigilRun, Some(&config));
        let per_10k = run.cpu_s / run.wall_s * 100.0 * 10_000.0 / run.rate;
        let lat = latency(&noop, latency_rate, humantime::parse_duration(delay).unwrap());
        println!(
            "| {delay} | {:.1}% | {}/{total} | {:.2} | {:.1}% | {per_10k:.1}% of a core | {lat} |",
            events.slowdown * 100.0,
            events.captured,
            events.cpu_s,
            run.slowdown * 100.0,
        );
    }
    println!();
    head_to_head(&noop, total, dir.path());
    load_attach_times();
    tree_under_fork_storm(if quick { 10_000 } else { 50_000 });
}

/// bpftrace against the daemon with its defaults and with the kernel
/// filter in `rules` mode (fork/exit skipped in the kernel), alternating,
/// each round against its own no-tracer baseline: on a noisy machine one
/// round of each says little.
fn head_to_head(noop: &Path, total: usize, dir: &Path) {
    let rules_mode = dir.join("vigil-filter-rules.toml");
    std::fs::write(&rules_mode, "[source.ebpf]\nfilter = \"rules\"\n").unwrap();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let base = storm(noop, "h2h", total, None).rate();
        let bpftrace = traced(noop, total, base, Tracer::Bpftrace, None);
        let vigil = traced(noop, total, base, Tracer::VigilRun, None);
        let lean = traced(noop, total, base, Tracer::VigilRun, Some(&rules_mode));
        let cpu = |t: &Traced| t.cpu_s / t.wall_s * 1e6 / t.rate;
        rounds.push([
            bpftrace.slowdown * 100.0,
            vigil.slowdown * 100.0,
            lean.slowdown * 100.0,
            cpu(&vigil),
            cpu(&lean),
        ]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let each: Vec<String> = rounds.iter().map(|r| format!("{:.1}% / {:.1}% / {:.1}%", r[0], r[1], r[2])).collect();
    println!(
        "head to head, 3 alternating rounds (bpftrace / vigil run / vigil run with filter = \"rules\"): {}",
        each.join(", ")
    );
    println!(
        "median slowdown: bpftrace {:.1}%, vigil run {:.1}%, vigil run with filter = \"rules\" {:.1}%; \
         vigil run CPU per 10,000 execs/s: {:.1}% of a core, {:.1}% with filter = \"rules\"",
        median(0),
        median(1),
        median(2),
        median(3),
        median(4)
    );
}

/// A static program that exits at once: the cheapest exec there is.
fn build_noop(dir: &Path) -> PathBuf {
    let src = dir.join("noop.c");
    let out = dir.join("vigil-storm-noop");
    std::fs::write(&src, "void _start(void) { __asm__ volatile(\"mov $60, %eax\\n xor %edi, %edi\\n syscall\"); }\n")
        .unwrap();
    let status = Command::new("gcc").args(["-nostdlib", "-static", "-O2", "-o"]).arg(&out).arg(&src).status();
    assert!(status.is_ok_and(|s| s.success()), "gcc could not build the storm program");
    out
}

struct Storm {
    execs: usize,
    elapsed: Duration,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` execs of `noop` by [`WORKERS`] threads, each with a unique
/// marker argument; paced to `rate` execs/s overall when given.
fn storm(noop: &Path, tag: &str, total: usize, rate: Option<f64>) -> Storm {
    let started = Instant::now();
    let per = total / WORKERS;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let noop = noop.to_path_buf();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                for i in 0..per {
                    if let Some(rate) = rate {
                        let due = t0 + Duration::from_secs_f64(i as f64 * WORKERS as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    Command::new(&noop).arg(format!("storm-{tag}-{w}-{i}")).status().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    Storm { execs: per * WORKERS, elapsed: started.elapsed() }
}

#[derive(Clone, Copy)]
enum Tracer {
    Bpftrace,
    VigilEvents,
    VigilRun,
}

struct Traced {
    rate: f64,
    slowdown: f64,
    captured: u64,
    cpu_s: f64,
    wall_s: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A storm while `tracer` runs; counts the storm's execs it reports.
fn traced(noop: &Path, total: usize, base_rate: f64, tracer: Tracer, config: Option<&Path>) -> Traced {
    let tag = match tracer {
        Tracer::Bpftrace => "bpftrace",
        Tracer::VigilEvents => "events",
        Tracer::VigilRun => "run",
    };
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules");
    let mut cmd = match tracer {
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", "tracepoint:sched:sched_process_exec { printf(\"%d %s\\n\", pid, str(args->filename)); }"]);
            c
        }
        Tracer::VigilEvents => {
            let mut c = Command::new(vigil);
            c.args(["events", "--source", "ebpf", "--kind", "process-exec"]);
            c
        }
        Tracer::VigilRun => {
            let mut c = Command::new(vigil);
            c.args(["run", "--source", "ebpf", "--rules"]).arg(&rules);
            c
        }
    };
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).env("RUST_LOG", "info");
    let mut child = Killed(cmd.spawn().expect("start the tracer"));
    let pid = child.0.id();

    // Ready when the tracer says so.
    let stderr = child.0.stderr.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ready_on_stdout = matches!(tracer, Tracer::Bpftrace);
    let ready_err = ready_tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pipeline running") || line.contains("eBPF programs attached") {
                let _ = ready_err.send(());
            }
        }
    });
    let captured = Arc::new(AtomicU64::new(0));
    let counter = captured.clone();
    let needle = noop.to_string_lossy().into_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if ready_on_stdout && line.starts_with("Attaching") {
                let _ = ready_tx.send(());
            } else if line.contains(&needle) && (ready_on_stdout || line.contains("\"kind\":\"process-exec\"")) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).expect("tracer ready");
    std::thread::sleep(Duration::from_millis(300));

    let cpu0 = cpu_seconds(pid);
    let s = storm(noop, tag, total, None);
    // Let the tracer catch up: until its count stops moving.
    let mut last = u64::MAX;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let now = captured.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let wall_s = s.elapsed.as_secs_f64();
    let cpu_s = cpu_seconds(pid) - cpu0;
    if matches!(tracer, Tracer::VigilRun)
        && config.is_none()
        && let Some(costs) = program_costs(pid)
    {
        println!("kernel time per program run (bpf_stats; exec, fork, exit), vigil run: {costs}");
    }
    drop(child);
    Traced {
        rate: s.rate(),
        slowdown: base_rate / s.rate() - 1.0,
        captured: captured.load(Ordering::Relaxed),
        cpu_s,
        wall_s,
    }
}

/// Mean run time of each BPF program `pid` holds, from fdinfo (needs
/// `kernel.bpf_stats_enabled=1`, which scripts/bench-ebpf.sh sets).
fn program_costs(pid: u32) -> Option<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?.flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let get = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(id), Some(ns), Some(n)) = (get("prog_id:"), get("run_time_ns:"), get("run_cnt:"))
            && n > 0
        {
            out.push((id, format!("{} ns × {n}", ns / n)));
        }
    }
    out.sort();
    out.dedup();
    (!out.is_empty()).then(|| out.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(", "))
}

fn load_attach_times() {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let source = EbpfSource::open(&EbpfConfig::default()).expect("eBPF source opens");
            let t = source.open_time;
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

/// Kernel timestamp of an exec → the event in this process's hands, at a
/// paced storm of `rate` execs/s.
fn latency(noop: &Path, rate: usize, wakeup_delay: Duration) -> String {
    let config = EbpfConfig { wakeup_delay, ..Default::default() };
    let source = EbpfSource::open(&config).expect("eBPF source opens");
    let stop = Stop::new();
    let running = spawn_source(Box::new(source), 4096, stop.clone(), Interest::all()).unwrap();
    let needle = noop.to_string_lossy().into_owned();
    let events = running.events;
    let collector = std::thread::spawn(move || {
        let mut lat = Vec::new();
        while let Ok(batch) = events.recv() {
            let now = vigil_engine::time::now_ns();
            for e in batch {
                if e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.exe == needle) {
                    lat.push(now.saturating_sub(e.time_ns));
                }
            }
        }
        lat
    });
    let s = storm(noop, "latency", rate * 2, Some(rate as f64));
    std::thread::sleep(Duration::from_millis(300));
    stop.stop();
    running.thread.join().unwrap().unwrap();
    let mut lat = collector.join().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1e3;
    format!("{:.0} / {:.0} / {:.0} µs ({} execs at {:.0}/s)", pct(0.5), pct(0.99), pct(1.0), lat.len(), s.rate())
}

/// The tree's size before and after `n` fork+exit pairs (no exec).
fn tree_under_fork_storm(n: usize) {
    let config = EbpfConfig::default();
    let source = EbpfSource::open(&config).expect("eBPF source opens");
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
