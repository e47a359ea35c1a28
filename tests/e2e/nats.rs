//! The NATS JetStream output against a real `nats-server` (Debian's, with
//! JetStream, on 127.0.0.1, started and stopped by pid here): every alert
//! arrives once, with its id and on its subject; a server outage during a
//! run loses nothing; `kill -9` with alerts spooled, then a restart,
//! delivers them, and JetStream drops a repeat by its message id.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use serde_json::Value;

use crate::support::*;
use crate::webhook::harness::{Vigil, miner_replay};
use crate::webhook::write_test_pki;

const STREAM: &str = "VIGIL";

/// A `nats-server -js` on a loopback port, its store in `store`.
struct NatsServer {
    child: Option<ChildGuard>,
    port: u16,
    store: PathBuf,
    binary: PathBuf,
    /// Its config file (TLS, authorization), if any.
    conf: Option<PathBuf>,
}

fn nats_server_binary() -> Option<PathBuf> {
    let tools = target_dir().join("tools/nats-server");
    if tools.exists() {
        return Some(tools);
    }
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"].iter().map(PathBuf::from).find(|p| p.exists())
}

impl NatsServer {
    /// `None` (after saying SKIPPED) when there is no nats-server.
    fn start(store: &Path) -> Option<NatsServer> {
        Self::start_with(store, None)
    }

    /// With the config file `conf` too.
    fn start_with(store: &Path, conf: Option<PathBuf>) -> Option<NatsServer> {
        let Some(binary) = nats_server_binary() else {
            skipped("nats", "no nats-server (scripts/setup-test-tools.sh installs it)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = NatsServer { child: None, port, store: store.to_path_buf(), binary, conf };
        s.listen();
        Some(s)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store.
    fn listen(&mut self) {
        let mut cmd = Command::new(&self.binary);
        if let Some(conf) = &self.conf {
            cmd.arg("-c").arg(conf);
        }
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(ChildGuard::spawn(cmd));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (by pid: SIGTERM, then the guard's wait).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal(libc::SIGTERM);
            child.wait_timeout(Duration::from_secs(10));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// What the test's client needs for a server with TLS and nkey users: the
/// test PKI's directory and a user's nkey seed.
struct Access {
    pki: PathBuf,
    seed: String,
}

async fn connect(url: &str, access: Option<&Access>) -> async_nats::Client {
    let Some(a) = access else { return async_nats::connect(url).await.unwrap() };
    let _ = rustls::crypto::ring::default_provider().install_default();
    async_nats::ConnectOptions::with_nkey(a.seed.clone())
        .require_tls(true)
        .add_root_certificates(a.pki.join("ca.pem"))
        .add_client_certificate(a.pki.join("client.pem"), a.pki.join("client.key"))
        .connect(url)
        .await
        .unwrap()
}

/// The stream Vigil's alerts go to: every `vigil.alerts.>` subject, repeats
/// dropped within two minutes.
fn create_stream(url: &str) {
    create_stream_with(url, None)
}

fn create_stream_with(url: &str, access: Option<&Access>) {
    runtime().block_on(async {
        let js = jetstream::new(connect(url, access).await);
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["vigil.alerts.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// Every message in the stream: (subject, alert JSON, Nats-Msg-Id).
fn stream_messages(url: &str) -> Vec<(String, Value, String)> {
    stream_messages_with(url, None)
}

fn stream_messages_with(url: &str, access: Option<&Access>) -> Vec<(String, Value, String)> {
    runtime().block_on(async {
        let js = jetstream::new(connect(url, access).await);
        let mut s = js.get_stream(STREAM).await.unwrap();
        let count = s.info().await.unwrap().state.messages as usize;
        let c = s.create_consumer(consumer::pull::Config::default()).await.unwrap();
        let mut out = Vec::new();
        use futures_util::StreamExt;
        while out.len() < count {
            let mut batch = c.fetch().max_messages(1000).expires(Duration::from_secs(2)).messages().await.unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let id =
                    m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string()).unwrap_or_default();
                out.push((m.subject.to_string(), serde_json::from_slice(&m.payload).unwrap(), id));
            }
        }
        out
    })
}

fn config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            r#"cache_dir = {cache:?}
[output]
spool_dir = {spool:?}
[alerts]
rule_rate = 0
global_rate = 0
dedup_window = "0s"
[[output.nats]]
name = "fleet"
servers = ["{url}"]
retry_initial = "100ms"
retry_max = "500ms"
timeout = "1s"
drain_timeout = "60s"
{extra}
"#,
            cache = dir.join("cache"),
            spool = dir.join("spool"),
        ),
    )
    .unwrap();
    path
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[test]
fn every_alert_arrives_once_with_its_id_on_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NatsServer::start(&dir.path().join("store")) else { return };
    create_stream(&server.url());
    let replay = miner_replay(dir.path(), "once", 200, Duration::from_millis(1));
    let cfg = config(dir.path(), &server.url(), "");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 200);
    let got = stream_messages(&server.url());
    let ids: Vec<String> = got.iter().map(|(_, a, _)| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, sent, "every alert once, in order; log:\n{}", v.log());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().replace('.', "_").to_lowercase();
    for (subject, alert, msg_id) in &got {
        let priority = alert["priority"].as_str().unwrap().to_lowercase();
        assert_eq!(subject, &format!("vigil.alerts.{host}.{priority}"));
        assert_eq!(msg_id, alert["id"].as_str().unwrap(), "the alert's id is its Nats-Msg-Id");
    }
    server.stop();
}

#[test]
fn a_server_outage_during_a_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NatsServer::start(&dir.path().join("store")) else { return };
    create_stream(&server.url());
    let replay = miner_replay(dir.path(), "outage", 300, Duration::from_millis(10));
    let cfg = config(dir.path(), &server.url(), "");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--realtime", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    std::thread::sleep(Duration::from_millis(800));
    server.stop();
    std::thread::sleep(Duration::from_millis(1500));
    server.listen();
    assert!(v.wait(Duration::from_secs(90)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 300);
    let ids: Vec<String> =
        stream_messages(&server.url()).iter().map(|(_, a, _)| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(sorted(ids), sorted(sent), "every alert once across the outage; log:\n{}", v.log());
    assert!(v.log().contains("output delivering again"), "{}", v.log());
    server.stop();
}

#[test]
fn kill_9_with_alerts_spooled_then_a_restart_delivers_them_and_jetstream_drops_a_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NatsServer::start(&dir.path().join("store")) else { return };
    let url = server.url();
    // Down while the daemon runs: everything waits in the spool.
    server.stop();
    let replay = miner_replay(dir.path(), "crash", 50, Duration::from_millis(1));
    let cfg = config(dir.path(), &url, "[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"");
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    let metrics = format!("http://{}/metrics", v.metrics_addr());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = http_get(&metrics);
        assert_eq!(status, 200);
        if text.contains("vigil_nats_spool_alerts{output=\"fleet\"} 50") {
            assert!(text.contains("vigil_nats_up{output=\"fleet\"} 0"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "alerts not spooled:\n{text}\nlog:\n{}", v.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    v.child.signal(libc::SIGKILL);
    v.wait(Duration::from_secs(10));
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 50);

    // The server back, the daemon restarted with nothing new: its spool goes out.
    server.listen();
    create_stream(&url);
    let empty = miner_replay(dir.path(), "empty", 0, Duration::ZERO);
    let mut again = Vigil::start(&["run", "--replay", empty.to_str().unwrap()], rules.path(), &cfg);
    assert!(again.wait(Duration::from_secs(60)).success(), "{}", again.log());
    let got = stream_messages(&url);
    let ids: Vec<String> = got.iter().map(|(_, a, _)| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, sent, "every alert, in order, after kill -9; log:\n{}", again.log());

    // A repeat of an alert (a crash between the acknowledgement and the
    // spool's removal sends it again) is dropped by its message id.
    let (subject, alert, id) = got[0].clone();
    let duplicate = runtime().block_on(async {
        let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js.publish_with_headers(subject, headers, alert.to_string().into()).await.unwrap();
        ack.await.unwrap().duplicate
    });
    assert!(duplicate, "JetStream recognised the repeat");
    assert_eq!(stream_messages(&url).len(), 50, "and kept one copy");
    server.stop();
}

/// Mutual TLS with a test CA and nkey authentication: every alert arrives;
/// the same output with another user's seed is refused by the server, and
/// its alerts stay spooled, said in the log.
#[test]
fn tls_with_a_client_certificate_and_an_nkey_user() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    write_test_pki(&pki);
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n\
             authorization {{\n  users: [ {{ nkey: {:?} }} ]\n}}\n",
            pki.join("server.pem"),
            pki.join("server.key"),
            pki.join("ca.pem"),
            user.public_key()
        ),
    )
    .unwrap();
    let Some(mut server) = NatsServer::start_with(&dir.path().join("store"), Some(conf)) else { return };
    let url = format!("tls://127.0.0.1:{}", server.port);
    let access = Access { pki: pki.clone(), seed: user.seed().unwrap() };
    create_stream_with(&url, Some(&access));

    let auth = |seed_file: &Path| {
        format!(
            "tls_required = true\nca_cert = {:?}\nclient_cert = {:?}\nclient_key = {:?}\nnkey_seed_file = {:?}",
            pki.join("ca.pem"),
            pki.join("client.pem"),
            pki.join("client.key"),
            seed_file
        )
    };
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, access.seed.as_str()).unwrap();
    let replay = miner_replay(dir.path(), "tls", 100, Duration::from_millis(1));
    let cfg = config(dir.path(), &url, &auth(&seed_file));
    let rules = rule_dir(&["crypto-miner"]);
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let ids: Vec<String> = stream_messages_with(&url, Some(&access))
        .iter()
        .map(|(_, a, _)| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, v.alert_ids(), "every alert over TLS; log:\n{}", v.log());

    // Another user's seed: refused, nothing published, the alerts kept.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let cfg = config(other.path(), &url, &auth(&stranger));
    // Not a minute of retries at the end: two seconds.
    let cfg_text = std::fs::read_to_string(&cfg).unwrap().replace("drain_timeout = \"60s\"", "drain_timeout = \"2s\"");
    std::fs::write(&cfg, cfg_text).unwrap();
    let replay = miner_replay(other.path(), "refused", 10, Duration::from_millis(1));
    let mut v = Vigil::start(&["run", "--replay", replay.to_str().unwrap()], rules.path(), &cfg);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let log = v.log();
    assert!(log.to_lowercase().contains("authorization"), "the refusal is logged:\n{log}");
    assert!(log.contains("alerts in its spool"), "{log}");
    assert_eq!(stream_messages_with(&url, Some(&access)).len(), 100, "nothing from the stranger");
    server.stop();
}
