//! Webhook delivery, against the test's own HTTP receiver on 127.0.0.1
//! (plain and TLS with a test CA): every alert arrives, signed; an outage
//! and a `kill -9` lose nothing; 429 (with Retry-After), 500 and timeouts
//! are retried and a 400 is not; Falco's shape; the metrics endpoint.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::support::*;

const SECRET: &str = "receiver-test-secret";

/// How the receiver answers one request.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16, Option<&'static str>, &'static str),
    /// Answer only after this long (past the client's timeout).
    Hang(Duration),
}

#[derive(Default)]
struct Received {
    /// Alerts of acknowledged requests.
    alerts: Vec<Value>,
    /// Each request: when, how many alerts, the status answered.
    requests: Vec<(Instant, usize, u16)>,
    bad_signatures: usize,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Received>,
    /// Answers for the next requests, in order; then `otherwise`.
    script: Mutex<VecDeque<Reply>>,
    /// The answer when the script is empty (200 when `None`).
    otherwise: Mutex<Option<u16>>,
}

/// The test's webhook receiver.
struct Receiver {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut r = Receiver { rt, shared: Default::default(), addr: "127.0.0.1:0".parse().unwrap(), tls, task: None };
        r.listen();
        r
    }

    /// Starts listening (again, on the same port after `stop`).
    fn listen(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        let listener = self.rt.block_on(async {
            socket.bind(self.addr).unwrap();
            socket.listen(128).unwrap()
        });
        self.addr = listener.local_addr().unwrap();
        let app =
            Router::new().route("/", post(receive)).route("/alerts", post(receive)).with_state(self.shared.clone());
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        self.task = Some(self.rt.spawn(serve(listener, app, tls)));
    }

    /// Goes down: the listener and every open connection close.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/alerts", self.addr)
    }

    fn script(&self, replies: &[Reply]) {
        self.shared.script.lock().unwrap().extend(replies.iter().copied());
    }

    fn otherwise(&self, status: Option<u16>) {
        *self.shared.otherwise.lock().unwrap() = status;
    }

    /// Ids of the acknowledged alerts (`id` in Vigil's format, `uuid` in Falco's).
    fn ids(&self) -> Vec<String> {
        let r = self.shared.received.lock().unwrap();
        r.alerts.iter().map(|a| a.get("id").or_else(|| a.get("uuid")).unwrap().as_str().unwrap().to_string()).collect()
    }

    fn alerts(&self) -> Vec<Value> {
        self.shared.received.lock().unwrap().alerts.clone()
    }

    fn requests(&self) -> Vec<(Instant, usize, u16)> {
        self.shared.received.lock().unwrap().requests.clone()
    }

    fn bad_signatures(&self) -> usize {
        self.shared.received.lock().unwrap().bad_signatures
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: tokio::net::TcpListener, app: Router, tls: Option<tokio_rustls::TlsAcceptor>) {
    // Aborting this task drops the set, which aborts every connection.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (app, tls) = (app.clone(), tls.clone());
        conns.spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = headers.get("x-vigil-signature").and_then(|v| v.to_str().ok()) == Some(sign(&body).as_str());
    let reply = s.script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or(Reply::Status(s.otherwise.lock().unwrap().unwrap_or(200), None, ""));
    let status = match reply {
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            // The client gave up long ago: not acknowledged.
            s.received.lock().unwrap().requests.push((Instant::now(), 0, 0));
            return StatusCode::OK.into_response();
        }
        Reply::Status(status, _, _) => status,
    };
    let mut json = body.to_vec();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
        json = out;
    }
    let alerts: Vec<Value> = match serde_json::from_slice(&json).unwrap() {
        Value::Array(items) => items,
        one => vec![one],
    };
    let n = alerts.len();
    {
        let mut r = s.received.lock().unwrap();
        r.requests.push((Instant::now(), n, status));
        if !signed {
            r.bad_signatures += 1;
        }
        if (200..300).contains(&status) {
            r.alerts.extend(alerts);
        }
    }
    let mut resp = (
        StatusCode::from_u16(status).unwrap(),
        match reply {
            Reply::Status(_, _, body) => body,
            Reply::Hang(_) => "",
        },
    )
        .into_response();
    if let Reply::Status(_, Some(after), _) = reply {
        resp.headers_mut().insert("retry-after", after.parse().unwrap());
    }
    resp
}

/// A replay file of `n` crypto-miner execs, each with its own marker,
/// `gap` apart.
fn miner_replay(dir: &Path, name: &str, n: usize, gap: Duration) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("{\"vigil-replay\": 1}\n");
    let t0 = 1_763_000_000_000_000_000u64;
    for i in 0..n {
        let e = serde_json::json!({
            "kind": "process-exec",
            "time_ns": t0 + i as u64 * gap.as_nanos() as u64,
            "process": {
                "pid": 10_000 + i, "tgid": 10_000 + i, "ppid": 1, "uid": 0, "gid": 0,
                "comm": "xmrig", "exe": "/tmp/xmrig",
                "argv": ["xmrig", "-o", "stratum+tcp://pool.example:3333", "--marker", format!("{name}-{i}")],
                "cwd": "/tmp", "ancestry": []
            }
        });
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A config with one webhook named `t` to `url`, shaping off (every alert
/// counts here), `webhook` added to the webhook's table and `extra` after it.
fn config(dir: &Path, url: &str, webhook: &str, extra: &str) -> PathBuf {
    let path = dir.join("vigil.toml");
    let text = format!(
        r#"cache_dir = {cache:?}
[output]
spool_dir = {spool:?}
[alerts]
rule_rate = 0
global_rate = 0
dedup_window = "0s"
[[output.webhook]]
name = "t"
url = "{url}"
hmac_secret = "{SECRET}"
retry_initial = "100ms"
retry_max = "500ms"
max_delay = "20ms"
{webhook}
{extra}
"#,
        cache = dir.join("cache"),
        spool = dir.join("spool"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `vigil` process whose stdout (alerts) and stderr (log) are collected.
struct Vigil {
    child: ChildGuard,
    stdout: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
}

impl Vigil {
    fn start(args: &[&str], rules: &Path, config: &Path) -> Vigil {
        let mut cmd: Command = vigil();
        cmd.args(args).arg("--rules").arg(rules).arg("--config").arg(config);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.child().stdout.take().unwrap();
        let err = child.child().stderr.take().unwrap();
        let s = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                s.lock().unwrap().push(line);
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Vigil { child, stdout, log }
    }

    /// Waits for exit (panics past `timeout`), then for the output threads.
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status =
            self.child.wait_timeout(timeout).unwrap_or_else(|| panic!("vigil still running; log:\n{}", self.log()));
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn alert_ids(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn alerts(&self) -> Vec<Value> {
        self.stdout.lock().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The first log line containing `needle`, within `timeout`.
    fn log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The metrics endpoint's address, from the log.
    fn metrics_addr(&self) -> String {
        let line =
            self.log_line("metrics endpoint listening", Duration::from_secs(30)).expect("metrics endpoint started");
        let at = line.find("addr=").unwrap() + 5;
        line[at..].split_whitespace().next().unwrap().to_string()
    }
}

fn sorted(ids: Vec<String>) -> Vec<String> {
    let set: BTreeSet<String> = ids.into_iter().collect();
    set.into_iter().collect()
}

#[test]
fn every_alert_arrives_batched_gzipped_and_signed() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url(), "gzip = true\nmax_alerts = 4", "");
    let mut v = Vigil::start(&["replay", fixture("bundled.jsonl").to_str().unwrap()], &bundled_rules_dir(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert!(sent.len() >= 10, "the fixture raises alerts");
    // Everything, once each, in order.
    assert_eq!(rx.ids(), sent, "log:\n{}", v.log());
    assert_eq!(rx.bad_signatures(), 0);
    assert!(rx.requests().iter().all(|(_, n, _)| *n <= 4));
    assert!(rx.requests().len() >= sent.len() / 4);
    // Vigil's own format: the alert as on stdout.
    assert_eq!(rx.alerts(), v.alerts());
}

/// falcosidekick's input (types.FalcoPayload): these fields, these types.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FalcoPayload {
    uuid: String,
    output: String,
    priority: String,
    rule: String,
    time: String,
    output_fields: serde_json::Map<String, Value>,
    source: String,
    tags: Vec<String>,
    hostname: String,
}

#[test]
fn falco_format_one_alert_per_request_above_min_priority() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url(), "format = \"falco\"\nmode = \"single\"\nmin_priority = \"warning\"", "");
    let mut v = Vigil::start(&["replay", fixture("bundled.jsonl").to_str().unwrap()], &bundled_rules_dir(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let severe = ["Emergency", "Alert", "Critical", "Error", "Warning"];
    let want: Vec<String> = v
        .alerts()
        .iter()
        .filter(|a| severe.contains(&a["priority"].as_str().unwrap()))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!want.is_empty() && want.len() < v.alerts().len(), "the fixture has alerts on both sides of the bound");
    assert_eq!(rx.ids(), want);
    assert!(rx.requests().iter().all(|(_, n, _)| *n == 1), "one alert per request");
    let time = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$").unwrap();
    let falco_priorities = ["emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"];
    for a in rx.alerts() {
        let p: FalcoPayload = serde_json::from_value(a.clone()).unwrap_or_else(|e| panic!("{e}: {a}"));
        assert!(falco_priorities.contains(&p.priority.to_lowercase().as_str()), "{}", p.priority);
        assert!(time.is_match(&p.time), "{}", p.time);
        assert!(!p.rule.is_empty() && !p.output.is_empty() && ["syscall", "container"].contains(&p.source.as_str()));
        assert!(p.output_fields.contains_key("evt.type"));
    }
}

#[test]
fn an_outage_during_a_run_loses_nothing() {
    let mut rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let replay = miner_replay(dir.path(), "outage", 300, Duration::from_millis(10));
    let cfg = config(dir.path(), &rx.url(), "drain_timeout = \"60s\"", "");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--realtime", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    std::thread::sleep(Duration::from_millis(800));
    rx.stop();
    std::thread::sleep(Duration::from_millis(1500));
    rx.listen();
    assert!(v.wait(Duration::from_secs(90)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 300);
    assert_eq!(sorted(rx.ids()), sorted(sent.clone()), "log:\n{}", v.log());
    assert_eq!(rx.ids(), sent, "in order");
    assert!(v.log().contains("webhook delivering again"), "{}", v.log());
}

#[test]
fn kill_9_with_alerts_spooled_then_a_restart_delivers_them() {
    let rx = Receiver::start(None);
    rx.otherwise(Some(503));
    let dir = tempfile::tempdir().unwrap();
    let replay = miner_replay(dir.path(), "crash", 50, Duration::from_millis(1));
    let cfg = config(
        dir.path(),
        &rx.url(),
        "drain_timeout = \"120s\"",
        "[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"",
    );
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    let metrics = format!("http://{}/metrics", v.metrics_addr());
    let deadline = Instant::now() + Duration::from_secs(30);
    let spooled = loop {
        let (status, text) = http_get(&metrics);
        assert_eq!(status, 200);
        if text.contains("vigil_webhook_spool_alerts{output=\"t\"} 50") {
            break text;
        }
        assert!(Instant::now() < deadline, "alerts not spooled:\n{text}\nlog:\n{}", v.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(spooled.contains("vigil_webhook_up{output=\"t\"} 0"), "{spooled}");
    assert!(rx.requests().iter().all(|(_, _, s)| *s == 503));
    v.child.signal(libc::SIGKILL);
    v.wait(Duration::from_secs(10));
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 50);
    assert!(rx.ids().is_empty());

    // Back up; the restarted daemon has nothing new, only its spool.
    rx.otherwise(None);
    let empty = miner_replay(dir.path(), "empty", 0, Duration::ZERO);
    let mut again = Vigil::start(&["run", "--replay", empty.to_str().unwrap()], rules.path(), &cfg);
    assert!(again.wait(Duration::from_secs(60)).success(), "{}", again.log());
    assert_eq!(rx.ids(), sent, "every alert, in order, after kill -9; log:\n{}", again.log());
    assert_eq!(rx.bad_signatures(), 0);
}

#[test]
fn retries_429_500_and_timeouts_but_not_a_400() {
    let rx = Receiver::start(None);
    rx.script(&[
        Reply::Status(429, Some("1"), "slow down"),
        Reply::Status(500, None, "oops"),
        Reply::Hang(Duration::from_secs(3)),
        Reply::Status(200, None, ""),
        Reply::Status(400, None, "bad alert: no thanks"),
        Reply::Status(200, None, ""),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let replay = miner_replay(dir.path(), "retry", 3, Duration::from_millis(1));
    let cfg = config(dir.path(), &rx.url(), "mode = \"single\"\ntimeout = \"1s\"\ndrain_timeout = \"60s\"", "");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["replay", replay.to_str().unwrap()], rules.path(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 3);
    // The first after its retries, the second rejected for good, the third.
    assert_eq!(rx.ids(), vec![sent[0].clone(), sent[2].clone()], "log:\n{}", v.log());
    let reqs = rx.requests();
    // 429, 500, the timed-out one, 200, 400, 200: the 400 was not retried.
    let answered: Vec<u16> = reqs.iter().map(|r| r.2).filter(|s| *s != 0).collect();
    assert_eq!(answered, [429, 500, 200, 400, 200], "log:\n{}", v.log());
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(950), "Retry-After: 1 honoured: {reqs:?} {gaps:?}\n{}", v.log());
    let log = v.log();
    assert!(log.contains("bad alert: no thanks"), "the rejection is logged with the body:\n{log}");
    assert!(log.contains("everything delivered"), "{log}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn test_pki(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vigil test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["vigil-client".to_string()]).unwrap();
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "vigil-client");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

#[test]
fn tls_with_a_test_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Some(test_pki(dir.path())));
    let d = dir.path();
    let tls = format!(
        "ca_cert = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
        d.join("ca.pem"),
        d.join("client.pem"),
        d.join("client.key")
    );
    let cfg = config(d, &rx.url(), &tls, "");
    let mut v = Vigil::start(&["replay", fixture("bundled.jsonl").to_str().unwrap()], &bundled_rules_dir(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    assert!(!v.alert_ids().is_empty());
    assert_eq!(rx.ids(), v.alert_ids(), "log:\n{}", v.log());

    // Without the client certificate the server refuses: retried, never lost
    // silently, and left in the spool at the drain deadline.
    let d2 = tempfile::tempdir().unwrap();
    let ca_only = format!("ca_cert = {:?}\ndrain_timeout = \"1s\"", d.join("ca.pem"));
    let cfg = config(d2.path(), &rx.url(), &ca_only, "");
    let mut v = Vigil::start(&["replay", fixture("bundled.jsonl").to_str().unwrap()], &bundled_rules_dir(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let log = v.log();
    assert!(log.contains("webhook delivery failed"), "{log}");
    assert!(log.contains("alerts in its spool"), "{log}");
}

/// promtool, from the path or where scripts/setup-test-tools.sh puts it.
fn promtool() -> Option<PathBuf> {
    let local = workspace().join("target/tools/promtool");
    if local.exists() {
        return Some(local);
    }
    let found = Command::new("sh").args(["-c", "command -v promtool"]).output().ok()?;
    found.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
}

#[test]
fn metrics_health_and_readiness_endpoints() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    // Slow enough to scrape while it runs.
    let replay = miner_replay(dir.path(), "metrics", 100, Duration::from_millis(100));
    let cfg = config(dir.path(), &rx.url(), "", "[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--realtime", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    let base = format!("http://{}", v.metrics_addr());
    assert_eq!(http_get(&format!("{base}/healthz")).0, 200);
    v.log_line("pipeline running", Duration::from_secs(30)).expect("running");
    assert_eq!(http_get(&format!("{base}/readyz")).0, 200);
    std::thread::sleep(Duration::from_secs(2));
    let (status, text) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    for needle in [
        "vigil_events_total{kind=\"process-exec\",source=\"replay\"}",
        "vigil_rule_events_total{rule=\"crypto-miner\"}",
        "vigil_rule_alerts_total{rule=\"crypto-miner\"}",
        "vigil_webhook_alerts_sent_total{output=\"t\"}",
        "vigil_output_alerts_total{output=\"webhook:t\"}",
        "vigil_alerts_suppressed_total{reason=\"duplicate\"} 0",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "vigil_ready 1",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    match promtool() {
        Some(p) => {
            let mut child = Command::new(&p)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "promtool check metrics:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool missing in CI: scripts/setup-test-tools.sh installs it"
            );
            eprintln!("SKIPPED promtool check: promtool not installed (scripts/setup-test-tools.sh installs it)");
        }
    }
    v.child.signal(libc::SIGTERM);
    assert!(v.wait(Duration::from_secs(30)).success(), "{}", v.log());
}

#[test]
fn a_dead_webhook_blocks_nothing_else() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port of loopback: refused, retried.
    let dead = "[[output.webhook]]\nname = \"dead\"\nurl = \"http://127.0.0.1:9/\"\ndrain_timeout = \"1s\"";
    let cfg = config(dir.path(), &rx.url(), "", dead);
    let start = Instant::now();
    let mut v = Vigil::start(&["replay", fixture("bundled.jsonl").to_str().unwrap()], &bundled_rules_dir(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    assert!(start.elapsed() < Duration::from_secs(30), "the dead output held the daemon up");
    assert!(!v.alert_ids().is_empty());
    assert_eq!(rx.ids(), v.alert_ids(), "the live webhook got everything; log:\n{}", v.log());
    let log = v.log();
    assert!(log.contains("output=webhook:dead") && log.contains("alerts in its spool"), "{log}");
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_so() {
    let rx = Receiver::start(None);
    rx.otherwise(Some(503));
    let dir = tempfile::tempdir().unwrap();
    // 3,000 alerts of ~700 bytes into a 1 MiB spool, while the receiver fails.
    let replay = miner_replay(dir.path(), "full", 3000, Duration::from_millis(1));
    let cfg = config(dir.path(), &rx.url(), "spool_max_bytes = \"1MiB\"\ndrain_timeout = \"30s\"", "");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    v.log_line("spool full", Duration::from_secs(30)).unwrap_or_else(|| panic!("no drop logged:\n{}", v.log()));
    rx.otherwise(None);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 3000);
    let got = rx.alerts();
    let reports: Vec<&Value> = got.iter().filter(|a| a["rule"] == "vigil-alerts-dropped").collect();
    assert!(!reports.is_empty(), "an alerts-dropped alert arrived");
    let dropped: u64 = reports.iter().map(|a| a["output_fields"]["vigil.dropped"].as_u64().unwrap()).sum();
    let delivered: Vec<String> = rx.ids().into_iter().filter(|id| sent.contains(id)).collect();
    // Every alert is either delivered or counted as dropped; the newest survive, in order.
    assert_eq!(delivered.len() as u64 + dropped, 3000, "log:\n{}", v.log());
    assert!(dropped > 0);
    assert_eq!(delivered.last(), sent.last());
    assert!(delivered.windows(2).all(|w| sent.iter().position(|s| *s == w[0]) < sent.iter().position(|s| *s == w[1])));
}
