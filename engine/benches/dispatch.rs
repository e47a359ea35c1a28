//! Vigil's rule-engine figures, printed as a table (BENCHMARKS.md keeps them
//! with the command). Run after `scripts/build-rules.sh`:
//!
//!     cargo bench -p vigil-engine --bench dispatch
//!
//! What it measures (all on synthetic exec events: comm, exe, 3-6 argv, 60%
//! in a container with id/name/image/3 labels, 3 ancestors; rules rarely alert):
//! 1. dispatch throughput on one thread: 1 rule, then 10 rules, each
//!    subscribed to every exec (5 of the 10, and the 1, are scoped to
//!    containers, so they are not called for the 40% on the host; a second
//!    pair of rows puts every event in a container, so every rule gets every
//!    event); batched calls (128) and per-event calls (1); the native Rust
//!    baseline of the same rule over the same packed events;
//! 2. the whole pipeline: a msgpack replay file read at full speed → rules;
//! 3. hot swap under a 100K events/s stream: rename → new rule active, and
//!    events lost or duplicated;
//! 4. the daemon process: peak RSS with the bundled rules loaded, and time
//!    from start to the first alert with a warm compile cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_engine::alert::AlertBuilder;
use vigil_engine::config::Config;
use vigil_engine::daemon::Daemon;
use vigil_engine::event::packed::{BatchView, assemble_batch, encode_event};
use vigil_engine::event::{Ancestor, Container, Event, EventKind, Process, Runtime};
use vigil_engine::output::Output;
use vigil_engine::plugin::dispatch::Dispatcher;
use vigil_engine::plugin::host::{HostSettings, PluginHost};
use vigil_engine::plugin::policy::RulePolicy;
use vigil_engine::plugin::ruledir::RuleDir;
use vigil_engine::sources::replay::{ReplaySource, ReplayWriter};
use vigil_engine::sources::{EventSender, Interest, Source, SourceError, Stop};

// The daemon's allocator, so the figures are the daemon's.
mod common;
use common::{NullOutput, target_dir};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ONE_RULE: &[&str] = &["shell-in-container"];
/// Ten rules that all subscribe to process-exec.
const TEN_RULES: &[&str] = &[
    "shell-in-container",
    "reverse-shell",
    "package-manager-in-container",
    "container-escape-tools",
    "crypto-miner",
    "download-piped-to-shell",
    "sensitive-file-recon",
    "discovery-burst",
    "spin",
    "trap",
];

fn wasm(id: &str) -> PathBuf {
    for d in ["rules", "example-rules", "test-rules"] {
        let p = target_dir().join(d).join(format!("{id}.wasm"));
        if p.exists() {
            return p;
        }
    }
    panic!("{id}.wasm not built: run scripts/build-rules.sh first");
}

/// Deterministic synthetic events (xorshift), about 1 in 1000 a shell in a container.
fn synthetic(n: usize) -> Vec<Event> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let exes = [
        "/usr/bin/python3",
        "/usr/local/bin/node",
        "/usr/sbin/nginx",
        "/bin/ls",
        "/bin/cat",
        "/usr/bin/grep",
        "/usr/bin/java",
    ];
    let words = ["-v", "--config", "/etc/app/config.yaml", "serve", "--port=8080", "/var/log/app.log", "-n", "worker"];
    let containers: Vec<Arc<Container>> = (0..20)
        .map(|i| {
            Arc::new(Container {
                id: format!("{:064x}", 0xabcdef0123456789u64 * (i + 1)),
                name: format!("app-{i}"),
                image: format!("registry.local/team/app-{i}:1.{i}.0"),
                runtime: Runtime::Containerd,
                labels: vec![
                    ("app".into(), format!("app-{i}")),
                    ("team".into(), "payments".into()),
                    ("tier".into(), "backend".into()),
                ],
                pid: 1000 + i as u32,
                ..Default::default()
            })
        })
        .collect();
    (0..n)
        .map(|i| {
            let r = rnd();
            let shell = r % 1000 == 0;
            let exe = if shell { "/bin/bash" } else { exes[(r >> 8) as usize % exes.len()] };
            let comm: String = exe.rsplit('/').next().unwrap().into();
            let mut argv = vec![comm.clone()];
            for k in 0..(2 + (r >> 16) % 5) {
                argv.push(words[((r >> (20 + k * 3)) % words.len() as u64) as usize].into());
            }
            let in_container = (r >> 32) % 10 < 6;
            Event {
                time_ns: 1_700_000_000_000_000_000 + i as u64 * 10_000,
                process: Some(Process {
                    pid: 10_000 + i as u32,
                    tgid: 10_000 + i as u32,
                    ppid: 900,
                    comm,
                    exe: exe.into(),
                    argv,
                    cwd: "/srv/app".into(),
                    ancestry: vec![
                        Ancestor {
                            pid: 900,
                            comm: "sh".into(),
                            exe: "/bin/sh".into(),
                            argv: Arc::from(["/bin/sh", "-c", "/srv/app/run.sh"].map(String::from)),
                        },
                        Ancestor {
                            pid: 800,
                            comm: "containerd-shim".into(),
                            exe: "/usr/bin/containerd-shim-runc-v2".into(),
                            argv: Arc::from(
                                ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "4f2a9c"]
                                    .map(String::from),
                            ),
                        },
                        Ancestor { pid: 1, comm: "systemd".into(), exe: "/sbin/init".into(), argv: Arc::from([]) },
                    ],
                    ..Default::default()
                }),
                container: in_container.then(|| containers[(r >> 40) as usize % containers.len()].clone()),
                ..Event::new(EventKind::ProcessExec)
            }
        })
        .collect()
}

fn rule_dir(ids: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        std::fs::copy(wasm(id), dir.path().join(format!("{id}.wasm"))).unwrap();
    }
    dir
}

fn dispatcher(host: &PluginHost, ids: &[&str], batch: usize) -> (Dispatcher, tempfile::TempDir) {
    let dir = rule_dir(ids);
    // Flat out, a CPU budget would throttle what is being measured.
    let mut config = Config::default();
    config.dispatch.cpu_budget = Duration::ZERO;
    let policy = RulePolicy::new(&config);
    let mut rd = RuleDir::new(dir.path());
    let (controls, report) = rd.scan(host, &|m| policy.resolve(m)).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut d = Dispatcher::new(batch, AlertBuilder::new("bench".into()));
    for c in controls {
        d.apply(c);
    }
    assert_eq!(d.rules().len(), ids.len());
    (d, dir)
}

/// ns per event through `d`, median of `runs` passes over `events` (handed
/// over in chunks as a source would; ids are reassigned each pass).
fn time_dispatch(d: &mut Dispatcher, events: &mut [Event], chunk: usize, runs: usize) -> (f64, usize) {
    let mut alerts = Vec::new();
    let warm = events.len().min(20_000);
    d.dispatch(&mut events[..warm], &mut alerts);
    let mut times = Vec::new();
    for _ in 0..runs {
        alerts.clear();
        let start = Instant::now();
        for c in events.chunks_mut(chunk) {
            d.dispatch(c, &mut alerts);
        }
        times.push(start.elapsed().as_nanos() as f64 / events.len() as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[runs / 2], alerts.len())
}

/// (packing ns/event, native rule ns/event): the same work as the guest
/// does, per 128-event chunk, with the chunk's bytes hot in cache.
fn time_native(events: &[Event]) -> (f64, f64) {
    // Reused buffers, as the dispatcher packs.
    let (mut records, mut ranges, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    let (mut encode, mut detect) = (Duration::ZERO, Duration::ZERO);
    let mut alerts = 0;
    for c in events.chunks(128) {
        let t = Instant::now();
        records.clear();
        ranges.clear();
        for e in c {
            let start = records.len();
            encode_event(e, &mut records);
            ranges.push(start..records.len());
        }
        assemble_batch(&records, ranges.iter().cloned(), &mut buf);
        encode += t.elapsed();
        let t = Instant::now();
        for e in BatchView::new(&buf).unwrap().iter() {
            alerts += vigil_example_rule_shell_in_container::detect(&e).is_some() as usize;
        }
        detect += t.elapsed();
    }
    std::hint::black_box(alerts);
    let n = events.len() as f64;
    (encode.as_nanos() as f64 / n, detect.as_nanos() as f64 / n)
}

/// The daemon's wiring with `source` and `output` in place of the configured ones.
fn daemon(config: Config, rules: &Path, watch: bool, output: NullOutput, source: impl Source + 'static) -> Daemon {
    Daemon::new(config)
        .rules(rules.to_path_buf(), watch)
        .with_outputs(vec![Box::new(output) as Box<dyn Output>])
        .with_source(Box::new(source))
}

/// Writes `events` as a msgpack replay file.
fn replay_file(dir: &Path, events: &[Event]) -> PathBuf {
    let file = dir.join("bench.msgpack");
    let mut w = ReplayWriter::create(&file).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    file
}

/// events/s of the whole pipeline reading `file` at full speed, median of `runs`.
fn replay_pipeline(cache: &Path, file: &Path, ids: &[&str], runs: usize) -> (f64, u64) {
    let rules = rule_dir(ids);
    let mut rates = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let mut config = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
        config.dispatch.cpu_budget = Duration::ZERO;
        let start = Instant::now();
        let summary = daemon(config, rules.path(), false, NullOutput, ReplaySource::new(file, false)).run().unwrap();
        n = summary.dispatch.events.load(Ordering::Relaxed);
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (rates[runs / 2], n)
}

/// Paced exec events with a hook per swap.
struct Paced {
    total: usize,
    per_sec: u64,
    swaps: Vec<(usize, Box<dyn FnOnce() + Send>)>,
}

impl Source for Paced {
    fn name(&self) -> &'static str {
        "paced"
    }
    fn run(self: Box<Self>, mut out: EventSender, _stop: Stop, _: Interest) -> Result<(), SourceError> {
        let Paced { total, per_sec, mut swaps } = *self;
        swaps.sort_by_key(|s| s.0);
        let mut swaps = swaps.into_iter().peekable();
        let proto = synthetic(1).pop().unwrap();
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            while swaps.peek().is_some_and(|(at, _)| *at <= sent) {
                (swaps.next().unwrap().1)();
            }
            let n = 100.min(total - sent);
            if out.send(vec![proto.clone(); n]).is_err() {
                break;
            }
            sent += n;
            let due = Duration::from_secs_f64(sent as f64 / per_sec as f64);
            if let Some(w) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(w);
            }
        }
        Ok(())
    }
}

fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![5u8];
    payload.extend_from_slice(b"bench");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// Swaps a rule (`crypto-miner`: gets every exec, rarely alerts, like a real rule) 5
/// times under 100K events/s; returns each swap's rename → active latency,
/// and the events its versions received in all against the events sent.
/// (A rule's figures carry across versions, so `events_in == sent` means
/// none was lost or handed to two versions; the e2e test `hot_reload`
/// checks the same per event id.)
fn hot_swap(cache: &Path, cached: bool) -> (Vec<f64>, u64, u64) {
    const TOTAL: usize = 600_000;
    const PER_SEC: u64 = 100_000;
    const RULE: &str = "crypto-miner";
    let rules = rule_dir(&[RULE]);
    let original = std::fs::read(wasm(RULE)).unwrap();
    let renamed_at: Arc<std::sync::Mutex<Vec<u64>>> = Default::default();
    let mut swaps: Vec<(usize, Box<dyn FnOnce() + Send>)> = Vec::new();
    for i in 0..5 {
        let dir = rules.path().to_path_buf();
        // With `cached`, the versions were compiled before (a rollback).
        let bytes = with_custom_section(&original, &format!("v{}{}", i, if cached { "c" } else { "" }));
        let stamps = renamed_at.clone();
        swaps.push((
            (i + 1) * 100_000,
            Box::new(move || {
                let tmp = dir.join(format!(".{RULE}.wasm.tmp"));
                std::fs::write(&tmp, &bytes).unwrap();
                stamps.lock().unwrap().push(vigil_engine::time::now_ns());
                std::fs::rename(&tmp, dir.join(format!("{RULE}.wasm"))).unwrap();
            }),
        ));
    }
    if cached {
        let host = PluginHost::new(&HostSettings { cache_dir: Some(cache.to_path_buf()) }).unwrap();
        for i in 0..5 {
            let bytes = with_custom_section(&original, &format!("v{i}c"));
            host.compile(&bytes, &vigil_engine::plugin::host::content_hash(&bytes)).unwrap();
        }
    }
    let config = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    let source = Paced { total: TOTAL, per_sec: PER_SEC, swaps };
    let summary = daemon(config, rules.path(), true, NullOutput, source).run().unwrap();
    let received = summary.rules[0].1.events_in.load(Ordering::Relaxed);
    let stamps = renamed_at.lock().unwrap().clone();
    let activations = summary_activations(&summary);
    let lat: Vec<f64> = stamps.iter().zip(activations.iter()).map(|(r, a)| (*a as f64 - *r as f64) / 1e6).collect();
    (lat, TOTAL as u64, received)
}

/// When each swap after the initial load was applied.
fn summary_activations(s: &vigil_engine::pipeline::Summary) -> Vec<u64> {
    s.dispatch.recent_swaps_ns.lock().unwrap().iter().skip(1).copied().collect()
}

/// Runs the daemon (`vigil run`) with the bundled rules on a replay file of
/// two events 2 s apart (real pace): time from start to the first alert,
/// then its memory once settled (VmRSS, and VmHWM: the peak so far).
fn daemon_run(vigil: &Path, rules: &Path, cfg: &Path, file: &Path) -> (f64, u64, u64) {
    use std::io::BufRead;
    let start = Instant::now();
    let mut child = Command::new(vigil)
        .args(["run", "--realtime", "--replay"])
        .arg(file)
        .arg("--rules")
        .arg(rules)
        .arg("--config")
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().expect("an alert").unwrap();
    let first = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let (rss, hwm) = (kib("VmRSS:"), kib("VmHWM:"));
    for _ in lines {}
    child.wait().unwrap();
    (first, rss / 1024, hwm / 1024)
}

fn daemon_figures() -> (f64, f64, u64, u64) {
    let vigil = target_dir().join("release/vigil");
    assert!(vigil.exists(), "build the daemon first: cargo build --release");
    let rules = target_dir().join("rules");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, format!("cache_dir = {:?}\n", dir.path().join("cache"))).unwrap();
    let file = dir.path().join("two.jsonl");
    let shell = r#"{"kind":"process-exec","time_ns":TIME,"process":{"pid":7,"tgid":7,"comm":"bash","exe":"/bin/bash","argv":["bash"]},"container":{"id":"c0ffee","name":"web","image":"nginx"}}"#;
    let t0 = 1_700_000_000_000_000_000u64;
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            shell.replace("TIME", &t0.to_string()),
            shell.replace("TIME", &(t0 + 2_000_000_000).to_string())
        ),
    )
    .unwrap();
    let (cold, _, _) = daemon_run(&vigil, &rules, &cfg, &file);
    let mut warm = Vec::new();
    let (mut rss, mut hwm) = (0, 0);
    for _ in 0..3 {
        let (t, r, h) = daemon_run(&vigil, &rules, &cfg, &file);
        warm.push(t);
        rss = rss.max(r);
        hwm = hwm.max(h);
    }
    warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (cold, warm[1], rss, hwm)
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if std::env::args().any(|a| a == "--swap-only") {
        let cache = tempfile::tempdir().unwrap();
        for cached in [false, true] {
            println!("{cached}: {:?}", hot_swap(cache.path(), cached));
        }
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    // First, while this process is small.
    let daemon = daemon_figures();
    let runs = if quick { 3 } else { 5 };
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&HostSettings { cache_dir: Some(cache.path().to_path_buf()) }).unwrap();
    let mut events = synthetic(n);
    println!("Vigil rule-engine figures ({n} synthetic exec events, median of {runs} runs, one thread unless said)");
    println!();

    let (encode, native) = time_native(&events);
    println!("| path | ns/event | events/s |");
    println!("|---|---:|---:|");
    let row = |name: &str, ns: f64| println!("| {name} | {ns:.0} | {:.0} |", 1e9 / ns);
    row("native Rust `shell-in-container` over packed views (no boundary)", native);
    row("packing the events (host side, once per batch for all rules)", encode);
    for (label, ids) in [("1 rule", ONE_RULE), ("10 rules", TEN_RULES)] {
        for batch in [128, 1] {
            let (mut d, _dir) = dispatcher(&host, ids, batch);
            let evs = if batch == 1 { &mut events[..n / 4] } else { &mut events[..] };
            let (ns, alerts) = time_dispatch(&mut d, evs, 256, runs);
            row(
                &format!(
                    "dispatch, {label}, {} (alerts: {alerts})",
                    if batch == 1 { "one call per event" } else { "batches of 128" }
                ),
                ns,
            );
        }
    }
    // Every rule called for every event: the same events, all in a container.
    let container = events.iter().find_map(|e| e.container.clone()).expect("some events are in a container");
    let mut contained = events.clone();
    for e in contained.iter_mut().filter(|e| e.container.is_none()) {
        e.container = Some(container.clone());
    }
    for (label, ids) in [("1 rule", ONE_RULE), ("10 rules", TEN_RULES)] {
        let (mut d, _dir) = dispatcher(&host, ids, 128);
        let (ns, alerts) = time_dispatch(&mut d, &mut contained, 256, runs);
        row(&format!("dispatch, {label}, batches of 128, every event in a container (alerts: {alerts})"), ns);
    }
    drop(contained);
    println!();

    let dir = tempfile::tempdir().unwrap();
    let file = replay_file(dir.path(), &events);
    let (eps1, _) = replay_pipeline(cache.path(), &file, ONE_RULE, 3);
    let (eps10, total) = replay_pipeline(cache.path(), &file, TEN_RULES, 3);
    println!("Whole pipeline, msgpack replay file at full speed (replay decoding on its own thread; median of 3):");
    println!("| rules | events | events/s |");
    println!("|---|---:|---:|");
    println!("| 1 | {total} | {eps1:.0} |");
    println!("| 10 | {total} | {eps10:.0} |");
    println!();

    println!("Hot swap of one rule under a 100K events/s stream (5 swaps each):");
    println!("| compile | rename → active, ms (each swap) | events sent | events the rule received |");
    println!("|---|---|---:|---:|");
    for cached in [false, true] {
        let (lat, sent, received) = hot_swap(cache.path(), cached);
        let lat: Vec<String> = lat.iter().map(|l| format!("{l:.0}")).collect();
        let kind = if cached { "cached (rollback)" } else { "new version" };
        println!("| {kind} | {} | {sent} | {received} |", lat.join(", "));
    }
    println!();

    let (cold, warm, rss, hwm) = daemon;
    println!("The `vigil run` process with the 9 bundled rules loaded:");
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| start to first alert, cold compile cache | {:.0} ms |", cold * 1e3);
    println!("| start to first alert, warm compile cache (median of 3) | {:.0} ms |", warm * 1e3);
    println!("| resident memory (VmRSS) once running | {rss} MiB |");
    println!("| peak resident memory (VmHWM) | {hwm} MiB |");
}
