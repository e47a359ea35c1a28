//! The bundled rules against real attacks (root only; SKIPPED otherwise):
//! `vigil run` on its eBPF source with the bundled rule directory, a real
//! Docker and a real containerd (CRI) on private sockets, and every case of
//! `tests/fixtures/detections.toml` run for real: inside a busybox container
//! entered as `docker exec` does, inside a container of a CRI pod entered as
//! `kubectl exec` does (ExecSync), and on the host. Every attack must raise
//! its expected rule's alert with the container's context (and the pod's,
//! in the pod); no benign case may raise any alert. The table of what fired
//! is printed.
//!
//! The pod shares the host's network (the tests' containerd has no CNI), so
//! the cases that reach beyond loopback (169.254.169.254, in the Docker
//! container without a network) are not run in it.
//!
//! A test binary of its own: cargo runs test binaries one after another,
//! so no other test's processes run on the host meanwhile. Alerts are tied
//! to a case by a sync rule added for the test: after each case the test
//! execs `true vigil-sync-N`, and the alerts before that one's alert are the
//! case's (the pipeline keeps event order). Host alerts count only when the
//! process descends from this test (its name is among the ancestors).

#[path = "../e2e/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;
#[path = "../e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use kubelet::Kubelet;
use support::*;

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    #[serde(rename = "where")]
    place: String,
    argv: Vec<String>,
    expect: String,
    tactic: String,
}

const SYNC_RULE: &str = r#"
- rule: Vigil Test Sync
  desc: the detection test's marker between cases
  condition: evt.type = execve and proc.args startswith "vigil-sync-"
  output: "%proc.args"
  priority: DEBUG
"#;

/// Where a case ran, and what it raised.
struct Outcome {
    case: Case,
    place: &'static str,
    rules: Vec<String>,
    /// An alert of the expected rule without the container's context.
    context_missing: bool,
    ran: bool,
}

struct Run {
    daemon: Daemon,
    next_sync: u32,
    my_comm: String,
}

impl Run {
    /// Alerts up to the next sync marker, with `keep` applied.
    fn sync(&mut self) -> Vec<serde_json::Value> {
        self.next_sync += 1;
        let marker = format!("vigil-sync-{}", self.next_sync);
        let status = Command::new("/bin/true").arg(&marker).status().unwrap();
        assert!(status.success());
        let mut alerts = Vec::new();
        loop {
            let line = self
                .daemon
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no sync alert for {marker}"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["rule"] == "Vigil Test Sync" {
                if v["output"] == marker.as_str() {
                    return alerts;
                }
                continue;
            }
            alerts.push(v);
        }
    }

    fn is_from_host_case(&self, alert: &serde_json::Value) -> bool {
        let f = &alert["output_fields"];
        f["container.id"] == "host"
            && (f["proc.pname"] == self.my_comm.as_str()
                || f["proc.ancestors"].as_array().is_some_and(|a| a.iter().any(|c| c == self.my_comm.as_str())))
    }
}

/// The context an alert of a case run in `place` must carry.
enum Expect<'a> {
    Host,
    Container { full_id: &'a str },
    Pod { full_id: &'a str, pod: &'a str, namespace: &'a str },
}

fn outcome(case: &Case, place: &'static str, alerts: &[serde_json::Value], ran: bool, expect: Expect<'_>) -> Outcome {
    let rules: Vec<String> = alerts.iter().map(|a| a["rule"].as_str().unwrap().to_string()).collect();
    let context_missing = alerts.iter().filter(|a| a["rule"] == case.expect.as_str()).any(|a| {
        let f = &a["output_fields"];
        match expect {
            Expect::Host => f["container.id"] != "host",
            Expect::Container { full_id } => f["container.full_id"] != full_id || f["container.image"].is_null(),
            Expect::Pod { full_id, pod, namespace } => {
                f["container.full_id"] != full_id || f["k8s.pod.name"] != pod || f["k8s.ns.name"] != namespace
            }
        }
    });
    Outcome { case: case.clone(), place, rules, context_missing, ran }
}

#[test]
fn bundled_rules_catch_every_attack_and_no_benign_command() {
    if !is_root() {
        skipped("bundled_rules_catch_every_attack_and_no_benign_command", "needs root (eBPF and Docker)");
        return;
    }
    let corpus: Corpus = toml::from_str(&std::fs::read_to_string(fixture("detections.toml")).unwrap()).unwrap();
    let rt = RuntimeDaemon::docker();
    let containerd = RuntimeDaemon::containerd();

    // The bundled rule directory, plus the test's sync rule.
    let rules = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundled_rules_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, rules.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(rules.path().join("zz-vigil-test-sync.yaml"), SYNC_RULE).unwrap();
    let config = format!(
        "[containers]\ndocker_socket = {:?}\npodman_socket = \"\"\ncri_socket = {:?}\n\
         [alerts]\nrule_rate = 0\nglobal_rate = 0\ndedup_window = \"0s\"\nredact = []\n",
        rt.socket(),
        containerd.socket()
    );
    let daemon = Daemon::start_in("ebpf", rules.path(), &config);
    let my_comm = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    let mut run = Run { daemon, next_sync: 0, my_comm };

    // Benign cases run first, in a container of their own: stateful rules
    // (discovery-burst) count per container, and the attacks must not make an
    // ordinary workload look like one.
    let benign_name = format!("vigil-detections-benign-{}", std::process::id());
    let attack_name = format!("vigil-detections-attack-{}", std::process::id());
    let mut ids = BTreeMap::new();
    for n in [&benign_name, &attack_name] {
        let id = rt.cli(&["run", "-d", "--name", n, "--network", "none", "vigil-busybox:test", "/bin/sleep", "600"]);
        ids.insert(n.clone(), id);
    }
    let mut kubelet = Kubelet::connect(&containerd.socket());
    let pod = kubelet.run_pod("shop-web-7d9f", "shop", &[("app", "web")]);
    let cri_benign = kubelet.run_container(&pod, "benign", &["/bin/sleep", "600"]);
    let cri_attack = kubelet.run_container(&pod, "app", &["/bin/sleep", "600"]);
    let _ = run.sync();

    let mut outcomes = Vec::new();
    let (benign, attacks): (Vec<&Case>, Vec<&Case>) = corpus.case.iter().partition(|c| c.expect.is_empty());
    for case in benign.into_iter().chain(attacks) {
        let name = if case.expect.is_empty() { &benign_name } else { &attack_name };
        if matches!(case.place.as_str(), "container" | "both") {
            let mut cmd = Command::new("docker");
            cmd.env("DOCKER_HOST", format!("unix://{}", rt.socket().display()));
            cmd.args(["exec", name]).args(&case.argv).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let ran = cmd.status().is_ok_and(|s| s.code() != Some(126) && s.code() != Some(127));
            let full_id = ids[name].as_str();
            let alerts: Vec<_> =
                run.sync().into_iter().filter(|a| a["output_fields"]["container.full_id"] == full_id).collect();
            outcomes.push(outcome(case, "docker", &alerts, ran, Expect::Container { full_id }));
        }
        if matches!(case.place.as_str(), "container" | "both") && !case.argv.iter().any(|a| a.contains("169.254.")) {
            let id = if case.expect.is_empty() { &cri_benign } else { &cri_attack };
            let argv: Vec<&str> = case.argv.iter().map(String::as_str).collect();
            let ran = !matches!(kubelet.exec_status(id, &argv), 126 | 127);
            let alerts: Vec<_> =
                run.sync().into_iter().filter(|a| a["output_fields"]["container.full_id"] == id.as_str()).collect();
            let expect = Expect::Pod { full_id: id, pod: &pod.name, namespace: &pod.namespace };
            outcomes.push(outcome(case, "cri pod", &alerts, ran, expect));
        }
        if matches!(case.place.as_str(), "host" | "both") {
            let mut cmd = Command::new(&case.argv[0]);
            cmd.args(&case.argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let ran = match cmd.spawn() {
                Ok(mut child) => {
                    let _ = child.wait();
                    true
                }
                Err(_) => false,
            };
            let all = run.sync();
            let alerts: Vec<_> = all.into_iter().filter(|a| run.is_from_host_case(a)).collect();
            outcomes.push(outcome(case, "host", &alerts, ran, Expect::Host));
        }
    }
    rt.cli(&["rm", "-f", &benign_name, &attack_name]);
    for id in [&cri_benign, &cri_attack] {
        kubelet.stop_and_remove(id);
    }
    drop(kubelet);
    let (status, log) = run.daemon.stop();
    assert!(status.success(), "{log}");

    // The table, then the verdict.
    let mut missed = Vec::new();
    let mut false_positives = Vec::new();
    let mut by_tactic: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    println!("| case | where | expected | fired |");
    println!("|---|---|---|---|");
    for o in &outcomes {
        let attack = !o.case.expect.is_empty();
        let caught = attack && o.rules.contains(&o.case.expect) && !o.context_missing;
        println!(
            "| {} | {} | {} | {} |",
            o.case.name,
            o.place,
            if attack { o.case.expect.as_str() } else { "(benign)" },
            if o.rules.is_empty() { "-".to_string() } else { o.rules.join(", ") }
        );
        if attack {
            let t = by_tactic.entry(o.case.tactic.clone()).or_default();
            t.0 += 1;
            t.1 += u32::from(caught);
            if !caught {
                missed.push(format!(
                    "{} ({}; ran: {}; context missing: {}): fired {:?}",
                    o.case.name, o.place, o.ran, o.context_missing, o.rules
                ));
            }
        } else if !o.rules.is_empty() {
            false_positives.push(format!("{} ({}): {:?}", o.case.name, o.place, o.rules));
        }
    }
    let attacks: u32 = by_tactic.values().map(|t| t.0).sum();
    let caught: u32 = by_tactic.values().map(|t| t.1).sum();
    let benign = outcomes.iter().filter(|o| o.case.expect.is_empty()).count();
    println!("\n| tactic | attacks | caught |\n|---|---|---|");
    for (t, (n, c)) in &by_tactic {
        println!("| {t} | {n} | {c} |");
    }
    println!("\nattacks caught: {caught}/{attacks}; benign runs with an alert: {}/{benign}", false_positives.len());
    assert!(attacks >= 40 && benign >= 15, "the corpus is big enough");
    assert!(
        missed.is_empty() && false_positives.is_empty(),
        "missed:\n{}\nfalse positives:\n{}",
        missed.join("\n"),
        false_positives.join("\n")
    );
}
