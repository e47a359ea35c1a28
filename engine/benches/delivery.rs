//! Alert delivery figures, printed (BENCHMARKS.md keeps them with the
//! command). Run after `scripts/build-rules.sh`:
//!
//!     cargo bench -p vigil-engine --bench delivery
//!
//! Against a receiver on 127.0.0.1 (axum, in this process, counting alerts
//! by the `x-vigil-alerts` header, or parsing bodies where ids are checked):
//! 1. webhook throughput: 200,000 real-shaped alerts (~1 KiB each) written
//!    as the output thread writes them, until the receiver acknowledged all;
//!    batches of 1,000, plain and gzipped; every write fsynced to the spool;
//! 2. the pipeline's throughput with and without a webhook output: a replay
//!    of 4,000,000 exec events, one in twenty raising an alert (crypto-miner:
//!    ~50,000 alerts/s at this machine's rate; one in N with
//!    `VIGIL_BENCH_ALERT_EVERY=N`), alternating rounds, median of 5;
//! 3. an outage: 1,000 alerts/s for 90 s, the receiver down from 15 s to
//!    75 s: alerts lost or duplicated, and how long the backlog takes to
//!    drain once the receiver is back (default retry settings).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use vigil_engine::config::WebhookConfig;
use vigil_engine::output::{AlertBatch, Output};

mod common;
#[path = "common/workload.rs"]
mod workload;
use workload::{Workload, pipeline_run, sample_alerts};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct Counts {
    alerts: AtomicU64,
    requests: AtomicU64,
    /// Collected when `parse` is on.
    ids: Mutex<Vec<String>>,
    parse: std::sync::atomic::AtomicBool,
}

async fn receive(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let n: u64 = headers.get("x-vigil-alerts").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    if c.parse.load(Ordering::Relaxed) {
        let alerts: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut ids = c.ids.lock().unwrap();
        ids.extend(alerts.iter().map(|a| a["id"].as_str().unwrap().to_string()));
    }
    c.alerts.fetch_add(n, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    "ok"
}

struct Receiver {
    rt: tokio::runtime::Runtime,
    counts: Arc<Counts>,
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        // An ordinary runtime: the receiver stands for a remote host, but
        // here it competes for the same 2 cores.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut r = Receiver { rt, counts: Default::default(), addr: "127.0.0.1:0".parse().unwrap(), task: None };
        r.listen();
        r
    }

    fn listen(&mut self) {
        // The runtime's context is needed to register the listener.
        let _guard = self.rt.enter();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        self.addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", post(receive)).with_state(self.counts.clone());
        self.task = Some(self.rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Down: no listener; open connections are dropped with the task.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

fn webhook(url: &str, gzip: bool) -> WebhookConfig {
    WebhookConfig {
        name: "bench".into(),
        url: url.into(),
        gzip,
        hmac_secret: Some("bench-secret".into()),
        ..Default::default()
    }
}

/// 1. alerts/s from writes to acknowledgements.
fn throughput(gzip: bool) -> (f64, f64, u64) {
    let n = 200_000;
    let rx = Receiver::start();
    let out = vigil_engine::output::outputs_runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = webhook(&rx.url(), gzip);
    let mut output = vigil_engine::output::webhook::open(&cfg, dir.path(), "bench-host", out.handle().clone()).unwrap();
    let batches: Vec<AlertBatch> = sample_alerts(n).chunks(1000).map(|c| AlertBatch::encode(c.to_vec())).collect();
    let start = Instant::now();
    for b in &batches {
        output.write(b).unwrap();
    }
    let written = start.elapsed().as_secs_f64();
    while rx.counts.alerts.load(Ordering::Relaxed) < n as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    output.close();
    (n as f64 / secs, n as f64 / written, rx.counts.requests.load(Ordering::Relaxed))
}

/// 2. events/s and alerts of one pipeline run over `file`, with or without a webhook.
/// 2. One pipeline run, with or without a webhook to `url`.
fn pipeline_run_webhook(file: &Path, rules: &Path, cache: &Path, url: Option<&str>) -> (f64, u64) {
    let out = vigil_engine::output::outputs_runtime().unwrap();
    let spool = tempfile::tempdir().unwrap();
    // No drain at the end: this measures the pipeline, not the receiver.
    let output = url.map(|url| {
        let cfg = WebhookConfig { drain_timeout: Duration::ZERO, ..webhook(url, false) };
        Box::new(vigil_engine::output::webhook::open(&cfg, spool.path(), "bench-host", out.handle().clone()).unwrap())
            as Box<dyn Output>
    });
    pipeline_run(file, rules, cache, output)
}

/// 3. The outage run: (sent, lost, duplicated, drain seconds, peak spooled).
fn outage() -> (u64, usize, usize, f64, u64) {
    let mut rx = Receiver::start();
    rx.counts.parse.store(true, Ordering::Relaxed);
    let out = vigil_engine::output::outputs_runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = WebhookConfig { drain_timeout: Duration::from_secs(120), ..webhook(&rx.url(), false) };
    let mut output = vigil_engine::output::webhook::open(&cfg, dir.path(), "bench-host", out.handle().clone()).unwrap();
    let handle = output.handle();
    let alerts = sample_alerts(90_000);
    let start = Instant::now();
    let (down_at, up_at) = (Duration::from_secs(15), Duration::from_secs(75));
    let (mut down, mut back) = (false, None::<Instant>);
    let mut drained = None;
    let mut peak = 0;
    for (i, chunk) in alerts.chunks(10).enumerate() {
        // 10 alerts every 10 ms.
        let due = start + Duration::from_millis(10 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        output.write(&AlertBatch::encode(chunk.to_vec())).unwrap();
        let t = start.elapsed();
        if !down && t >= down_at {
            rx.stop();
            down = true;
        }
        if back.is_none() && t >= up_at {
            rx.listen();
            back = Some(Instant::now());
        }
        peak = peak.max(handle.spool.len());
        if let Some(b) = back
            && drained.is_none()
            && handle.spool.len() <= 100
        {
            drained = Some(b.elapsed().as_secs_f64());
        }
    }
    output.close();
    let ids = rx.counts.ids.lock().unwrap();
    let unique: HashSet<&String> = ids.iter().collect();
    let lost = alerts.len() - unique.len();
    (ids.len() as u64, lost, ids.len() - unique.len(), drained.unwrap_or(f64::NAN), peak)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // VIGIL_BENCH_ONLY=2 runs part 2 only (for profiling).
    let only = std::env::var("VIGIL_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    println!("# Alert delivery (webhook to 127.0.0.1)");
    println!();
    if run("1") {
        println!(
            "## 1. Throughput: 200,000 alerts of {} bytes, batches of 1,000",
            serde_json::to_vec(&sample_alerts(1)[0]).unwrap().len()
        );
        for gzip in [false, true] {
            let (rate, write_rate, requests) = throughput(gzip);
            println!(
                "- gzip {gzip}: {rate:.0} alerts/s delivered ({requests} requests); spool writes alone {write_rate:.0} alerts/s"
            );
        }
    }

    if run("2") {
        println!();
        println!(
            "## 2. Pipeline throughput with and without a webhook (4,000,000 execs, 1 in {} alerts)",
            workload::alert_every()
        );
        let rx = Receiver::start();
        let url = rx.url();
        Workload::new().compare("webhook", |file, rules, cache, on| {
            pipeline_run_webhook(file, rules, cache, on.then_some(url.as_str()))
        });
    }

    if run("3") {
        println!();
        println!("## 3. Outage: 1,000 alerts/s for 90 s, receiver down from 15 s to 75 s");
        let (received, lost, dup, drain, peak) = outage();
        println!("- received {received} of 90000: lost {lost}, duplicated {dup}");
        println!("- peak spooled {peak} alerts; backlog drained {drain:.2} s after the receiver came back");
    }
}
