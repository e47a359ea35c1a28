//! What the delivery benchmarks (webhook, NATS) share: real-shaped alerts,
//! an exec workload, and one pipeline run with or without an output.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_engine::alert::Alert;
use vigil_engine::config::{AlertsConfig, Config};
use vigil_engine::daemon::Daemon;
use vigil_engine::event::{Event, EventKind, Process};
use vigil_engine::output::Output;
use vigil_engine::sources::replay::{ReplaySource, ReplayWriter};

use crate::common::{NullOutput, target_dir};

/// A real alert (the golden file's first), with a fresh id.
pub fn sample_alerts(n: usize) -> Vec<Alert> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundled.jsonl");
    let line = std::fs::read_to_string(golden).unwrap().lines().next().unwrap().to_string();
    let a: Alert = serde_json::from_str(&line).unwrap();
    (0..n)
        .map(|i| {
            let mut b = a.clone();
            b.id = format!("{:032x}", i);
            b
        })
        .collect()
}

/// One exec in this many alerts: 20, or `VIGIL_BENCH_ALERT_EVERY` (the
/// output's share of the pipeline's work scales with it).
pub fn alert_every() -> usize {
    std::env::var("VIGIL_BENCH_ALERT_EVERY").ok().and_then(|n| n.parse().ok()).filter(|&n| n > 0).unwrap_or(20)
}

/// Exec events, one in [`alert_every`] a miner.
pub fn events(n: usize) -> Vec<Event> {
    let every = alert_every();
    (0..n)
        .map(|i| {
            let argv: Vec<String> = if i % every == 0 {
                vec!["xmrig".into(), "-o".into(), "stratum+tcp://pool.example:3333".into(), format!("--id={i}")]
            } else {
                vec!["ls".into(), "-la".into(), format!("/srv/app/{i}")]
            };
            Event {
                time_ns: 1_700_000_000_000_000_000 + i as u64 * 10_000,
                process: Some(Process {
                    pid: 10_000 + i as u32,
                    tgid: 10_000 + i as u32,
                    ppid: 900,
                    comm: argv[0].clone(),
                    exe: format!("/usr/bin/{}", argv[0]),
                    argv,
                    ..Default::default()
                }),
                ..Event::new(EventKind::ProcessExec)
            }
        })
        .collect()
}

/// Events/s and alerts of one pipeline run over `file` with the crypto-miner
/// rule, into a null output and `output` if any. Flat out: neither a CPU
/// budget nor the per-rule alert cap is measured here.
pub fn pipeline_run(file: &Path, rules: &Path, cache: &Path, output: Option<Box<dyn Output>>) -> (f64, u64) {
    let mut outputs: Vec<Box<dyn Output>> = vec![Box::new(NullOutput)];
    outputs.extend(output);
    let mut config = Config {
        cache_dir: Some(cache.to_path_buf()),
        alerts: AlertsConfig { rule_rate: 0, global_rate: 0, dedup_window: Duration::ZERO, ..Default::default() },
        ..Default::default()
    };
    config.dispatch.cpu_budget = Duration::ZERO;
    config.dispatch.max_alerts_per_sec = 10_000_000;
    let daemon = Daemon::new(config)
        .rules(rules.to_path_buf(), false)
        .with_outputs(outputs)
        .with_source(Box::new(ReplaySource::new(file, false)));
    let start = Instant::now();
    let summary = daemon.run().unwrap();
    let secs = start.elapsed().as_secs_f64();
    (summary.dispatch.events.load(Ordering::Relaxed) as f64 / secs, summary.dispatch.alerts.load(Ordering::Relaxed))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Part 2 of the delivery benchmarks: the crypto-miner rule over 4,000,000
/// execs, one in twenty alerting (or [`alert_every`]), replayed as fast as
/// they are read.
pub struct Workload {
    pub rules: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    _dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl Workload {
    pub fn new() -> Self {
        let rules = tempfile::tempdir().unwrap();
        std::fs::copy(target_dir().join("example-rules/crypto-miner.wasm"), rules.path().join("crypto-miner.wasm"))
            .expect("run scripts/build-rules.sh first");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.msgpack");
        let mut w = ReplayWriter::create(&file).unwrap();
        for e in events(4_000_000) {
            w.write(&e).unwrap();
        }
        w.finish().unwrap();
        Workload { rules, cache: tempfile::tempdir().unwrap(), _dir: dir, file }
    }

    /// Alternating runs (five, or `VIGIL_BENCH_ROUNDS`) without and with an output (`run(.., true)`
    /// adds it), after a warm-up that compiles the rule; prints the medians
    /// and their ratio.
    pub fn compare(&self, what: &str, run: impl Fn(&Path, &Path, &Path, bool) -> (f64, u64)) {
        let (mut without, mut with, mut alerts) = (Vec::new(), Vec::new(), 0);
        run(&self.file, self.rules.path(), self.cache.path(), false);
        // VIGIL_BENCH_ROUNDS: more alternating runs for steadier medians (5 by default).
        let rounds = std::env::var("VIGIL_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
        for _ in 0..rounds {
            without.push(run(&self.file, self.rules.path(), self.cache.path(), false).0);
            let (rate, a) = run(&self.file, self.rules.path(), self.cache.path(), true);
            with.push(rate);
            alerts = a;
        }
        let (a, b) = (median(without.clone()), median(with.clone()));
        println!("- without {what}: {a:.0} events/s (runs: {without:.0?})");
        println!("- with {what}:    {b:.0} events/s (runs: {with:.0?}), {alerts} alerts per run");
        println!("- ratio with/without: {:.3}", b / a);
    }
}
