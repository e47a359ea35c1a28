//! The eBPF source under an exec storm, against bpftrace in the same run.
//! Needs root, gcc (for the tiny static program the storm executes) and
//! bpftrace; `scripts/bench-ebpf.sh` installs what is missing and runs it:
//!
//!     cargo bench -p vigil-engine --bench exec_storm [-- --quick] [--rounds N]
//!         [--only table,h2h,pairs,latency,rules,costs,load,tree,idle] [--pair-rounds N]
//!         [--rule-rounds N] [--shapes spawn,fork] [--alt-slice DURATION]
//!
//! The storm: 4 workers fork+exec a tiny static binary, each exec with a
//! unique argv marker, as fast as they can. It comes in two shapes: `spawn`,
//! 4 threads of this process running `std::process::Command` (posix_spawn,
//! a vfork), and `fork`, 4 processes of a small C program that fork() and
//! execve() (the classic shape of a shell or a build). Phases (`table`,
//! on the spawn storm):
//! no tracer (the baseline rate); bpftrace printing one line per exec
//! (`tracepoint:sched:sched_process_exec`); then for each
//! `source.ebpf.wakeup_delay`: `vigil events --source ebpf --kind
//! process-exec` printing one JSON line per exec (completeness, slowdown),
//! `vigil run --source ebpf` with the bundled rules (the daemon's real job:
//! slowdown, CPU per 10,000 execs/s), and in this process the
//! kernel→user-space latency of exec events at a paced 10,000 execs/s.
//! Then (`h2h`) for each storm shape, `--rounds` (3) alternating rounds of
//! bpftrace against `vigil run` (defaults, with the kernel filter in
//! `rules` mode, and with a dispatch thread of its own instead of inline
//! dispatch), each against its own baseline. Then (`pairs`,
//! `--pair-rounds`, 30) many short rounds of bpftrace against `vigil run`
//! (defaults, a dispatch thread, the reader as SCHED_OTHER with and without
//! the short slice), read as paired differences. Then (`latency`) the
//! latency at 10,000 execs/s consumed inline with the same priorities, and
//! on a consumer thread with and without them, alternating. Then (`rules`,
//! `--rule-rounds`, 15) paired rounds of bpftrace against `vigil run` with
//! the bundled rules, one rule and none: the rules' share. Then (`costs`)
//! the kernel time per program run of bpftrace's program and Vigil's. Then the
//! time to load and attach (`load`), the process tree's size around a
//! long fork/exit storm (`tree`), and what the daemon costs on an idle host
//! (`idle`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_engine::config::EbpfConfig;
use vigil_engine::enrich::Enricher;
use vigil_engine::event::EventKind;
use vigil_engine::pipeline::{spawn_source, spawn_source_inline};
use vigil_engine::sched::{Policy, Priority};
use vigil_engine::sources::ebpf::EbpfSource;
use vigil_engine::sources::{Interest, Stop};

const WORKERS: usize = 4;
/// The default `dispatch.thread_policy`, `thread_slice` and `thread_nice`.
fn default_priority() -> Priority {
    vigil_engine::config::DispatchConfig::default().priority()
}

fn main() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("exec_storm: needs root (eBPF, bpftrace); skipped");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = value("--rounds").map_or(3, |r| r.parse().expect("--rounds N"));
    let only = value("--only");
    let shapes = value("--shapes").unwrap_or_else(|| "spawn,fork".into());
    // The slice that `pairs` and `latency` try with SCHED_OTHER (the
    // default policy until 2026-12-06, with this slice).
    let alt_slice = value("--alt-slice").unwrap_or_else(|| "100us".into());
    let alt = humantime::parse_duration(&alt_slice).expect("--alt-slice DURATION");
    let wants = |phase: &str| only.as_deref().is_none_or(|o| o.split(',').any(|p| p == phase));
    let total: usize = if quick { 4_000 } else { 20_000 };
    let latency_rate = if quick { 3_000 } else { 10_000 };
    let dir = tempfile::tempdir().unwrap();
    let noop = build_noop(dir.path());
    let fork_storm = build_fork_storm(dir.path());
    let spawn = Shape::Spawn;
    println!("exec storm: {total} execs of {} by {WORKERS} workers per phase", noop.display());

    if wants("table") {
        table(&noop, total, latency_rate, dir.path());
    }
    if wants("h2h") {
        if shapes.contains("spawn") {
            head_to_head(&noop, spawn, total, rounds, dir.path());
        }
        if shapes.contains("fork") {
            head_to_head(&noop, Shape::Fork(&fork_storm), total, rounds, dir.path());
        }
    }
    if wants("pairs") {
        let pair_rounds = value("--pair-rounds").map_or(30, |r| r.parse().expect("--pair-rounds N"));
        if shapes.contains("spawn") {
            pairs(&noop, spawn, total, pair_rounds, dir.path(), &alt_slice);
        }
        if shapes.contains("fork") {
            pairs(&noop, Shape::Fork(&fork_storm), total, pair_rounds, dir.path(), &alt_slice);
        }
    }
    if wants("latency") {
        latency_slices(&noop, latency_rate, rounds, alt);
    }
    if wants("rules") {
        let rule_rounds = value("--rule-rounds").map_or(15, |r| r.parse().expect("--rule-rounds N"));
        rules_share(&noop, total, rule_rounds, dir.path());
    }
    if wants("costs") {
        program_costs_phase(&noop, total);
    }
    if wants("load") {
        load_attach_times();
    }
    if wants("tree") {
        tree_under_fork_storm(if quick { 10_000 } else { 50_000 });
    }
    if wants("idle") {
        idle(if quick { 5 } else { 20 });
    }
}

/// What `vigil run --source ebpf` with the bundled rules costs on a host
/// doing (almost) nothing: CPU and wake-ups per thread over `secs` seconds,
/// from /proc, once it has been running for 3 s.
fn idle(secs: u64) {
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules");
    let mut cmd = Command::new(vigil);
    cmd.args(["run", "--source", "ebpf", "--rules"]).arg(&rules);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_LOG", "info");
    let mut child = Killed(cmd.spawn().expect("start vigil run"));
    let pid = child.0.id();
    let stderr = child.0.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pipeline running") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).expect("vigil run ready");
    std::thread::sleep(Duration::from_secs(3));
    // (name, CPU ticks, context switches) per thread.
    let threads = || -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let dir = entry.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
            let ticks = cpu_ticks(&dir);
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let switches: u64 = status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            out.push((name, ticks, switches));
        }
        out.sort();
        out
    };
    let before = threads();
    std::thread::sleep(Duration::from_secs(secs));
    let after = threads();
    drop(child);
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut cpu, mut wakeups) = (0.0, 0.0);
    let mut each = Vec::new();
    for (name, t1, c1) in &after {
        let Some((_, t0, c0)) = before.iter().find(|(n, _, _)| n == name) else { continue };
        let (c, w) = ((t1 - t0) as f64 / hz / secs as f64 * 100.0, (c1 - c0) as f64 / secs as f64);
        cpu += c;
        wakeups += w;
        each.push(format!("{name} {c:.2}% {w:.0}/s"));
    }
    println!(
        "idle, vigil run with the bundled rules, {secs} s: {cpu:.2}% of a core, {wakeups:.0} context switches/s ({})",
        each.join(", ")
    );
}

/// No tracer, bpftrace, then each `wakeup_delay` (spawn storm).
fn table(noop: &Path, total: usize, latency_rate: usize, dir: &Path) {
    let spawn = Shape::Spawn;
    let base = storm(noop, spawn, "base", total, None);
    let bpftrace = traced(noop, spawn, total, base.rate(), Tracer::Bpftrace, None);
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
        let config = dir.join(format!("vigil-{delay}.toml"));
        std::fs::write(&config, format!("[source.ebpf]\nwakeup_delay = \"{delay}\"\n")).unwrap();
        let events = traced(noop, spawn, total, base.rate(), Tracer::VigilEvents, Some(&config));
        let run = traced(noop, spawn, total, base.rate(), Tracer::VigilRun, Some(&config));
        let per_10k = run.cpu_s / run.wall_s * 100.0 * 10_000.0 / run.rate;
        let wakeup_delay = humantime::parse_duration(delay).unwrap();
        let config = EbpfConfig { wakeup_delay, ..Default::default() };
        let lat = latency(noop, latency_rate, config, Consumed::Inline(default_priority())).summary();
        println!(
            "| {delay} | {:.1}% | {}/{total} | {:.2} | {:.1}% | {per_10k:.1}% of a core | {lat} |",
            events.slowdown * 100.0,
            events.captured,
            events.cpu_s,
            run.slowdown * 100.0,
        );
    }
    println!();
}

/// bpftrace against the daemon with its defaults, with the kernel filter
/// in `rules` mode (fork/exit skipped in the kernel) and with a dispatch
/// thread of its own, alternating,
/// each round against its own no-tracer baseline: on a noisy machine one
/// round of each says little.
fn head_to_head(noop: &Path, shape: Shape, total: usize, n: usize, dir: &Path) {
    let rules_mode = dir.join("vigil-filter-rules.toml");
    std::fs::write(&rules_mode, "[source.ebpf]\nfilter = \"rules\"\n").unwrap();
    let threaded = dispatch_thread_config(dir);
    let mut rounds = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..n {
        let base = storm(noop, shape, "h2h", total, None).rate();
        bases.push(base);
        let bpftrace = traced(noop, shape, total, base, Tracer::Bpftrace, None);
        let vigil = traced(noop, shape, total, base, Tracer::VigilRun, None);
        let lean = traced(noop, shape, total, base, Tracer::VigilRun, Some(&rules_mode));
        let thread_run = traced(noop, shape, total, base, Tracer::VigilRun, Some(&threaded));
        let cpu = |t: &Traced| t.cpu_s / t.wall_s * 1e6 / t.rate;
        rounds.push([
            bpftrace.slowdown * 100.0,
            vigil.slowdown * 100.0,
            lean.slowdown * 100.0,
            thread_run.slowdown * 100.0,
            cpu(&vigil),
            cpu(&lean),
        ]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let each: Vec<String> =
        rounds.iter().map(|r| format!("{:.1}% / {:.1}% / {:.1}% / {:.1}%", r[0], r[1], r[2], r[3])).collect();
    let at_or_below = rounds.iter().filter(|r| r[1] <= r[0]).count();
    bases.sort_by(f64::total_cmp);
    println!(
        "head to head, {} storm (no tracer: median {:.0} execs/s), {n} alternating rounds \
         (bpftrace / vigil run / vigil run with filter = \"rules\" / vigil run with inline_dispatch = false): {}",
        shape.name(),
        bases[bases.len() / 2],
        each.join(", ")
    );
    println!(
        "median slowdown: bpftrace {:.1}%, vigil run {:.1}%, with filter = \"rules\" {:.1}%, with inline_dispatch = false \
         {:.1}%; vigil run at or below bpftrace in {at_or_below} of {n} rounds; vigil run CPU per 10,000 execs/s: \
         {:.1}% of a core, {:.1}% with filter = \"rules\"",
        median(0),
        median(1),
        median(2),
        median(3),
        median(4),
        median(5)
    );
}

/// The config of `vigil run` with a dispatch thread of its own
/// (`source.ebpf.inline_dispatch = false`, the layout before inline dispatch).
fn dispatch_thread_config(dir: &Path) -> PathBuf {
    let path = dir.join("vigil-dispatch-thread.toml");
    std::fs::write(&path, "[source.ebpf]\ninline_dispatch = false\n").unwrap();
    path
}

/// Many short rounds of bpftrace against `vigil run` (defaults: SCHED_BATCH
/// with the kernel's slice; with `source.ebpf.inline_dispatch = false`; with
/// `dispatch.thread_policy = other` and `thread_slice` = `--alt-slice`,
/// 100 µs by default, the default until 2026-12-06; with `other` and the
/// kernel's slice), each round against its own baseline, the order of
/// the tracers rotating from round to round: single phases on this shared
/// machine swing by 10 points and more, so the verdict is read from the
/// paired differences (vigil minus bpftrace in the same round).
fn pairs(noop: &Path, shape: Shape, total: usize, n: usize, dir: &Path, alt_slice: &str) {
    let threaded = dispatch_thread_config(dir);
    let other_slice = dir.join("vigil-other-slice.toml");
    std::fs::write(&other_slice, format!("[dispatch]\nthread_policy = \"other\"\nthread_slice = \"{alt_slice}\"\n"))
        .unwrap();
    let other_label = format!("vigil run with dispatch.thread_policy = other, thread_slice = {alt_slice}");
    let other = dir.join("vigil-other.toml");
    std::fs::write(&other, "[dispatch]\nthread_policy = \"other\"\n").unwrap();
    let rivals = [
        ("vigil run", Tracer::VigilRun, None),
        ("vigil run with source.ebpf.inline_dispatch = false", Tracer::VigilRun, Some(threaded.as_path())),
        (other_label.as_str(), Tracer::VigilRun, Some(other_slice.as_path())),
        ("vigil run with dispatch.thread_policy = other (the kernel's slice)", Tracer::VigilRun, Some(other.as_path())),
    ];
    paired_against_bpftrace("pairs", noop, shape, total, n, &rivals);
}

/// How much of `vigil run`'s slowdown is its rules': paired rounds of
/// bpftrace against the daemon with the bundled rules, with one of them
/// (crypto-miner, which reads every exec's argv) and with none (the eBPF
/// source, its process tree and decoding alone), on the spawn storm.
fn rules_share(noop: &Path, total: usize, n: usize, dir: &Path) {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules");
    let (one, none) = (dir.join("rules-one"), dir.join("rules-none"));
    for d in [&one, &none] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(bundled.join("crypto-miner.wasm"), one.join("crypto-miner.wasm")).expect("target/rules built");
    let rivals = [
        ("vigil run (9 bundled rules: 3 called for a host exec, 8 for a container's)", Tracer::VigilRun, None),
        ("vigil run with 1 rule", Tracer::VigilRunRules(&one), None),
        ("vigil run with no rule", Tracer::VigilRunRules(&none), None),
    ];
    paired_against_bpftrace("rules", noop, Shape::Spawn, total, n, &rivals);
}

/// `n` rounds: a no-tracer baseline, then bpftrace and each rival in an
/// order rotating from round to round; prints each one's median slowdown
/// and its paired difference with bpftrace, with quartiles.
fn paired_against_bpftrace(
    phase: &str,
    noop: &Path,
    shape: Shape,
    total: usize,
    n: usize,
    rivals: &[(&str, Tracer, Option<&Path>)],
) {
    let mut tracers = vec![(Tracer::Bpftrace, None)];
    tracers.extend(rivals.iter().map(|(_, t, c)| (*t, *c)));
    let k = tracers.len();
    let mut slowdowns: Vec<Vec<f64>> = Vec::new();
    for round in 0..n {
        let base = storm(noop, shape, phase, total, None).rate();
        let mut r = vec![0.0; k];
        for j in 0..k {
            let i = (round + j) % k;
            let (tracer, config) = tracers[i];
            r[i] = traced(noop, shape, total, base, tracer, config).slowdown * 100.0;
        }
        slowdowns.push(r);
    }
    let quartiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    let column = |i: usize| quartiles(slowdowns.iter().map(|r| r[i]).collect());
    let diff = |i: usize| quartiles(slowdowns.iter().map(|r| r[i] - r[0]).collect());
    let below = |i: usize| slowdowns.iter().filter(|r| r[i] <= r[0]).count();
    let b = column(0);
    let mut line = format!(
        "{phase}, {} storm, {n} rounds: median slowdown (quartiles) bpftrace {:.1}% ({:.1}-{:.1})",
        shape.name(),
        b.1,
        b.0,
        b.2
    );
    for (i, (label, _, _)) in rivals.iter().enumerate() {
        let (c, d) = (column(i + 1), diff(i + 1));
        line.push_str(&format!(
            "; {label} {:.1}% ({:.1}-{:.1}), minus bpftrace in the same round: median {:+.1} points \
             ({:+.1} to {:+.1}), at or below in {} of {n}",
            c.1,
            c.0,
            c.2,
            d.1,
            d.0,
            d.2,
            below(i + 1)
        ));
    }
    println!("{line}");
}

/// Where a storm's execs come from.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// Threads of this process running `Command` (posix_spawn: a vfork).
    Spawn,
    /// Processes of this C program, each looping fork() + execve().
    Fork(&'a Path),
}

impl Shape<'_> {
    fn name(&self) -> &'static str {
        match self {
            Shape::Spawn => "spawn",
            Shape::Fork(_) => "fork",
        }
    }
}

/// `storm-fork WORKERS PER NOOP TAG`: WORKERS processes, each doing PER
/// fork() + execve(NOOP, "storm-TAG-w-i") + waitpid().
fn build_fork_storm(dir: &Path) -> PathBuf {
    let src = dir.join("storm-fork.c");
    let out = dir.join("vigil-storm-fork");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int workers = atoi(argv[1]), per = atoi(argv[2]);
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            char marker[128];
            for (int i = 0; i < per; i++) {
                snprintf(marker, sizeof marker, "storm-%s-%d-%d", argv[4], w, i);
                pid_t pid = fork();
                if (pid == 0) { execl(argv[3], argv[3], marker, (char *)0); _exit(127); }
                if (pid < 0 || waitpid(pid, 0, 0) < 0) _exit(1);
            }
            _exit(0);
        }
    }
    int status, failed = 0;
    while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    return failed;
}
"#,
    )
    .unwrap();
    let status = Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).status();
    assert!(status.is_ok_and(|s| s.success()), "gcc could not build the fork storm");
    out
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
fn storm(noop: &Path, shape: Shape, tag: &str, total: usize, rate: Option<f64>) -> Storm {
    let started = Instant::now();
    let per = total / WORKERS;
    if let Shape::Fork(program) = shape {
        assert!(rate.is_none(), "the fork storm is not paced");
        let status = Command::new(program)
            .args([WORKERS.to_string(), per.to_string()])
            .arg(noop)
            .arg(tag)
            .status()
            .expect("run the fork storm");
        assert!(status.success(), "the fork storm failed: {status}");
        return Storm { execs: per * WORKERS, elapsed: started.elapsed() };
    }
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
enum Tracer<'a> {
    Bpftrace,
    VigilEvents,
    /// `vigil run` with the bundled rules.
    VigilRun,
    /// `vigil run` with the rules in this directory.
    VigilRunRules(&'a Path),
}

struct Traced {
    rate: f64,
    slowdown: f64,
    captured: u64,
    cpu_s: f64,
    wall_s: f64,
    /// Mean run time of each of its BPF programs, when statistics are on.
    program_costs: Option<String>,
}

fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: no preconditions.
    cpu_ticks(Path::new(&format!("/proc/{pid}"))) as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// User plus system CPU ticks of the process or thread whose /proc
/// directory is `dir`.
fn cpu_ticks(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
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
fn traced(noop: &Path, shape: Shape, total: usize, base_rate: f64, tracer: Tracer, config: Option<&Path>) -> Traced {
    let tag = match tracer {
        Tracer::Bpftrace => "bpftrace",
        Tracer::VigilEvents => "events",
        Tracer::VigilRun | Tracer::VigilRunRules(_) => "run",
    };
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let rules = match tracer {
        Tracer::VigilRunRules(dir) => dir.to_path_buf(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules"),
    };
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
        Tracer::VigilRun | Tracer::VigilRunRules(_) => {
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
    let s = storm(noop, shape, tag, total, None);
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
    let program_costs = program_costs(pid);
    drop(child);
    Traced {
        rate: s.rate(),
        slowdown: base_rate / s.rate() - 1.0,
        captured: captured.load(Ordering::Relaxed),
        cpu_s,
        wall_s,
        program_costs,
    }
}

/// Kernel time per program run of bpftrace's one program and of Vigil's
/// (exec, fork, exit; in `vigil run` with its defaults), each under a
/// spawn storm. The kernel's run-time statistics are on only for this
/// phase (`BPF_ENABLE_STATS`, held by an fd): they read the clock twice per
/// program run, three runs per exec for Vigil, one for bpftrace, so the
/// overhead phases run without them, as a host does.
fn program_costs_phase(noop: &Path, total: usize) {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let base = storm(noop, Shape::Spawn, "costs", total, None).rate();
    for (label, tracer) in [("bpftrace", Tracer::Bpftrace), ("vigil run", Tracer::VigilRun)] {
        let t = traced(noop, Shape::Spawn, total, base, tracer, None);
        let costs = t.program_costs.unwrap_or_else(|| "no program ran (statistics off?)".into());
        println!("kernel time per program run (bpf_stats), {label}, in program-id order: {costs}");
    }
}

/// Mean run time of each BPF program `pid` holds, from fdinfo (needs the
/// kernel's run-time statistics on: [`program_costs_phase`]).
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
            let config = EbpfConfig::default();
            let source = EbpfSource::open(&config, Enricher::new(&config)).expect("eBPF source opens");
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

/// Latency with events consumed on the reader's thread (inline dispatch,
/// the default: the reader as SCHED_BATCH at nice -5 with the kernel's
/// slice; as SCHED_OTHER with the `--alt-slice` (the default until
/// 2026-12-06) and with the kernel's slice), on a consumer thread with the
/// default priority (`inline_dispatch = false`), and on a consumer thread
/// with the kernel's defaults, alternating.
fn latency_slices(noop: &Path, rate: usize, n: usize, alt: Duration) {
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

struct Latency {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    n: usize,
    rate: f64,
}

impl Latency {
    fn summary(&self) -> String {
        format!("{} / {} / {} µs ({} execs at {:.0}/s)", self.p50_us, self.p99_us, self.max_us, self.n, self.rate)
    }
}

/// Where the latency is read, standing for the daemon's dispatch.
#[derive(Clone, Copy)]
enum Consumed {
    /// On the source's own thread, which asks for this priority (inline dispatch).
    Inline(Priority),
    /// On a thread of its own that asks for this priority.
    Thread(Priority),
}

/// The storm's exec latencies in `batch`, in ns, as of now.
fn exec_latencies(batch: &[vigil_engine::event::Event], needle: &str, into: &mut Vec<u64>) {
    let now = vigil_engine::time::now_ns();
    for e in batch {
        if e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.exe == needle) {
            into.push(now.saturating_sub(e.time_ns));
        }
    }
}

/// Kernel timestamp of an exec → the event in the consumer's hands, at a
/// paced storm of `rate` execs/s.
fn latency(noop: &Path, rate: usize, config: EbpfConfig, consumed: Consumed) -> Latency {
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
fn tree_under_fork_storm(n: usize) {
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
