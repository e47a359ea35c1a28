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

pub(crate) mod harness;
pub(crate) mod receiver;

use harness::*;
use receiver::*;

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
    assert!(v.log().contains("output delivering again"), "{}", v.log());
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

/// The test PKI's DER, as a server needs it.
pub(crate) struct TestPki {
    pub(crate) ca: rustls::pki_types::CertificateDer<'static>,
    pub(crate) server: rustls::pki_types::CertificateDer<'static>,
    pub(crate) server_key: Vec<u8>,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`: `ca.pem`, `server.pem` and `server.key`,
/// `client.pem` and `client.key`.
pub(crate) fn write_test_pki(dir: &Path) -> TestPki {
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
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    TestPki { ca: ca.der().clone(), server: server.der().clone(), server_key: server_key.serialize_der() }
}

/// The receiver's TLS config over [`write_test_pki`]: client certificates required.
fn test_pki(dir: &Path) -> Arc<rustls::ServerConfig> {
    let pki = write_test_pki(dir);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server], key)
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
    assert!(log.contains("delivery failed; alerts stay spooled"), "{log}");
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
            skipped("promtool check", "promtool not installed (scripts/setup-test-tools.sh installs it)");
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
    full_spool_drops_the_oldest_and_says_so(&[], 1);
}

/// Paced over 3 s the alerts reach the spool in many writes: many drop
/// reports, most of them dropped in turn before delivery, each handing its
/// count to the next.
#[test]
fn a_full_spool_fed_slowly_counts_every_drop_once() {
    full_spool_drops_the_oldest_and_says_so(&["--realtime"], 5);
}

/// The receiver fails until the daemon logged `drops` drops.
fn full_spool_drops_the_oldest_and_says_so(flags: &[&str], drops: usize) {
    let rx = Receiver::start(None);
    rx.otherwise(Some(503));
    let dir = tempfile::tempdir().unwrap();
    // 3,000 alerts of ~700 bytes into a 1 MiB spool, while the receiver fails.
    let replay = miner_replay(dir.path(), "full", 3000, Duration::from_millis(1));
    let cfg = config(dir.path(), &rx.url(), "spool_max_bytes = \"1MiB\"\ndrain_timeout = \"30s\"", "");
    let rules = rule_dir(&["crypto-miner"]);
    let args: Vec<&str> =
        ["run", "--replay", replay.to_str().unwrap()].into_iter().chain(flags.iter().copied()).collect();
    let mut v = Vigil::start(&args, rules.path(), &cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while v.log().matches("spool full").count() < drops {
        assert!(Instant::now() < deadline, "not {drops} drops logged:\n{}", v.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.otherwise(None);
    assert!(v.wait(Duration::from_secs(60)).success(), "{}", v.log());
    let sent = v.alert_ids();
    assert_eq!(sent.len(), 3000);
    let got = rx.alerts();
    let reports: Vec<&Value> = got.iter().filter(|a| a["rule"] == "vigil-alerts-dropped").collect();
    assert!(!reports.is_empty(), "an alerts-dropped alert arrived");
    eprintln!("{} drop reports arrived", reports.len());
    let dropped: u64 = reports.iter().map(|a| a["output_fields"]["vigil.dropped"].as_u64().unwrap()).sum();
    let delivered: Vec<String> = rx.ids().into_iter().filter(|id| sent.contains(id)).collect();
    // Every alert is either delivered or counted as dropped; the newest survive, in order.
    assert_eq!(delivered.len() as u64 + dropped, 3000, "log:\n{}", v.log());
    assert!(dropped > 0);
    assert_eq!(delivered.last(), sent.last());
    assert!(delivered.windows(2).all(|w| sent.iter().position(|s| *s == w[0]) < sent.iter().position(|s| *s == w[1])));
}
