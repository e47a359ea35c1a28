//! NATS JetStream output figures, printed (BENCHMARKS.md keeps them with
//! the command). Run after `scripts/build-rules.sh` and
//! `scripts/setup-test-tools.sh` (which unpacks Debian's nats-server):
//!
//!     cargo bench -p vigil-engine --bench nats
//!
//! Against a `nats-server -js` this starts on 127.0.0.1 (its store in a
//! temporary directory), with a stream capturing `vigil.alerts.>`:
//! 1. throughput: 200,000 real-shaped alerts written as the output thread
//!    writes them (batches of 1,000, every write fsynced to the spool) until
//!    JetStream acknowledged them all;
//! 2. the pipeline's throughput with and without the output: a replay of
//!    4,000,000 exec events, one in twenty raising an alert (one in N with
//!    `VIGIL_BENCH_ALERT_EVERY=N`), alternating rounds, median of 5
//!    (`VIGIL_BENCH_ROUNDS`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use vigil_engine::config::NatsConfig;
use vigil_engine::output::{AlertBatch, Output};
use vigil_engine::time::thread_cpu_ns;

mod common;
#[path = "common/workload.rs"]
mod workload;
use common::target_dir;
use workload::{Workload, pipeline_run, sample_alerts};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The server, killed when dropped; its store goes with it.
struct Server {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server at the pipeline's CPU priority, or at `nice 19` (standing in
/// for a server on other machines: it takes only CPU the pipeline leaves).
fn server(niced: bool) -> Server {
    let binary: PathBuf = [target_dir().join("tools/nats-server"), PathBuf::from("/usr/sbin/nats-server")]
        .into_iter()
        .find(|p| p.exists())
        .expect("no nats-server: run scripts/setup-test-tools.sh");
    let store = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = if niced {
        let mut c = Command::new("nice");
        c.args(["-n", "19"]).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    let child = command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = Server { child, port, _store: store };
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(s.url()).await.unwrap());
        js.create_stream(stream::Config {
            name: "VIGIL".into(),
            subjects: vec!["vigil.alerts.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    s
}

impl Server {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    fn messages(&self) -> u64 {
        rt().block_on(async {
            let js = jetstream::new(async_nats::connect(self.url()).await.unwrap());
            js.get_stream("VIGIL").await.unwrap().info().await.unwrap().state.messages
        })
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn nats(url: &str) -> NatsConfig {
    NatsConfig { name: "bench".into(), servers: vec![url.into()], ..Default::default() }
}

/// CPU time of this process's threads named `vigil-out` (the outputs
/// runtime: delivery tasks, the NATS client, spool reads and removals).
fn outputs_runtime_cpu() -> Duration {
    let me = procfs::process::Process::myself().unwrap();
    let ticks: u64 = me
        .tasks()
        .unwrap()
        .flatten()
        .filter_map(|t| t.stat().ok())
        .filter(|s| s.comm == "vigil-out")
        .map(|s| s.utime + s.stime)
        .sum();
    Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second() as f64)
}

/// Part 1: alerts/s from writes to acknowledgements, and the CPU time per
/// alert of the writes (the output thread's share: filtering, spool appends)
/// and of the delivery (the outputs runtime: reading, publishing, removing).
fn throughput() -> (f64, f64, f64) {
    let n = 200_000;
    let s = server(false);
    let out = vigil_engine::output::outputs_runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut output =
        vigil_engine::output::nats::open(&nats(&s.url()), dir.path(), "bench-host", out.handle().clone()).unwrap();
    let batches: Vec<AlertBatch> = sample_alerts(n).chunks(1000).map(|c| AlertBatch::encode(c.to_vec())).collect();
    let delivery_cpu = outputs_runtime_cpu();
    let start = Instant::now();
    let cpu = thread_cpu_ns();
    for b in &batches {
        output.write(b).unwrap();
    }
    let write_cpu = Duration::from_nanos(thread_cpu_ns() - cpu);
    while output.spooled() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let delivery_cpu = outputs_runtime_cpu() - delivery_cpu;
    output.close();
    assert_eq!(s.messages(), n as u64, "JetStream holds every alert once");
    let per_alert = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (n as f64 / secs, per_alert(write_cpu), per_alert(delivery_cpu))
}

/// 2. One pipeline run, with or without the NATS output to `url`.
fn pipeline_run_nats(file: &Path, rules: &Path, cache: &Path, url: Option<&str>) -> (f64, u64) {
    let out = vigil_engine::output::outputs_runtime().unwrap();
    let spool = tempfile::tempdir().unwrap();
    // No drain at the end: this measures the pipeline, not the server.
    let output = url.map(|url| {
        let cfg = NatsConfig { drain_timeout: Duration::ZERO, ..nats(url) };
        Box::new(vigil_engine::output::nats::open(&cfg, spool.path(), "bench-host", out.handle().clone()).unwrap())
            as Box<dyn Output>
    });
    pipeline_run(file, rules, cache, output)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // VIGIL_BENCH_ONLY=2 runs part 2 only (for profiling).
    let only = std::env::var("VIGIL_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    println!("# NATS JetStream output (nats-server -js on 127.0.0.1)");
    if run("1") {
        println!();
        println!(
            "## 1. Throughput: 200,000 alerts of {} bytes, batches of 1,000",
            serde_json::to_vec(&sample_alerts(1)[0]).unwrap().len()
        );
        for round in 1..=3 {
            let (rate, write_us, delivery_us) = throughput();
            println!(
                "- round {round}: {rate:.0} alerts/s acknowledged by JetStream; CPU per alert: writes {write_us:.2} µs, delivery {delivery_us:.2} µs"
            );
        }
    }
    if !run("2") {
        return;
    }
    println!();
    println!(
        "## 2. Pipeline throughput with and without the NATS output (4,000,000 execs, 1 in {} alerts)",
        workload::alert_every()
    );
    let workload = Workload::new();
    for niced in [false, true] {
        println!();
        println!(
            "### nats-server {}",
            if niced { "at nice 19 (as if on other machines)" } else { "at the pipeline's priority" }
        );
        let s = server(niced);
        let url = s.url();
        workload.compare("NATS", |file, rules, cache, on| {
            pipeline_run_nats(file, rules, cache, on.then_some(url.as_str()))
        });
    }
}
