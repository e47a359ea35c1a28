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

mod latency;
mod storm;
mod traced;

use latency::*;
use storm::*;
use traced::*;

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
