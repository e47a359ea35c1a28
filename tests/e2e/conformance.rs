//! The rule interface's conformance suite: what any implementation of
//! `vigil:rules/detector` must do, driven through the real host (the
//! pipeline, its packed encoding, wasmtime). It runs against two echo rules
//! that return every field they read, one per SDK: `echo-all` (Rust,
//! tests/rules/echo-all) and `echo-all-py` (Python, tests/python-rules,
//! built with componentize-py by scripts/build-rules.sh).
//!
//! - every event kind, and every field, round-trips: what the rule read is
//!   what the host was given (empty and absent fields, a long argv, hundreds
//!   of labels, text outside ASCII, quotes and newlines in alert fields);
//! - metadata: id, version, every subscription, as `vigil rules check` reads it;
//! - `init`: a config the rule refuses keeps it from loading, with its message;
//! - `snapshot`/`restore`: state carried over a hot swap under load.

use std::time::Duration;

use serde_json::{Value, json};
use vigil_engine::config::Config;
use vigil_engine::event::Event;

use crate::support::*;

const RULES: [&str; 2] = ["echo-all", "echo-all-py"];

/// `None` (after saying SKIPPED) when the Python rule is not built.
fn python_built() -> bool {
    let built = target_dir().join("test-rules/echo-all-py.wasm").exists();
    if !built {
        skipped("conformance (Python)", "echo-all-py.wasm not built: scripts/setup-test-tools.sh, then build-rules.sh");
    }
    built
}

/// Every event kind, with every field the interface has set, and some empty.
fn events() -> Vec<Event> {
    let long_argv: Vec<String> = (0..300).map(|i| format!("arg-{i}-{}", "x".repeat(i % 50))).collect();
    let labels: serde_json::Map<String, Value> =
        (0..200).map(|i| (format!("label.{i:03}"), Value::from(format!("value {i} ünïcödé")))).collect();
    let process = json!({
        "pid": 4200, "tgid": 4200, "ppid": 4100, "uid": 1000, "gid": 1000, "comm": "bash", "exe": "/bin/bash",
        "argv": ["bash", "-c", "echo \"quoted\" 'x'\nnewline\ttab \\ back", "\u{fffd}not utf-8\u{fffd}", "日本語", ""],
        "argv_truncated": true, "cwd": "/home/dev", "start_time_ns": 1_700_000_000_123_000_000u64,
        "cgroup_id": 9876, "namespaces": {"pid": 1, "mnt": 2, "net": 3, "uts": 4, "ipc": 5, "user": 6, "cgroup": 7},
        "ancestry": [
            {"pid": 4100, "comm": "node", "exe": "/usr/local/bin/node", "argv": ["node", "server.js"]},
            {"pid": 1, "comm": "tini", "exe": "/tini", "argv": []}
        ],
        "cwd_truncated": true, "script": "/entry.sh",
        "exe_file": {"inode": 42, "device": 2049, "mode": 0o100755, "upper_layer": true, "memfd": false, "unlinked": true},
        "tty": {"device": 34816, "name": "pts/0", "pty": true},
        "login_uid": 1000, "session_id": 7, "user": "dev", "group": "dev", "login_user": "alice"
    });
    let container = json!({
        "id": "3f2a9c1d7e8b4a6f5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", "name": "web-7d9f",
        "image": "registry.local/shop/web:1.4.2", "image_digest": "sha256:5d41402abc4b2a76b9719d911017c592",
        "runtime": "containerd", "labels": labels, "pid": 4200, "privileged": true, "started_at_ns": 1_700_000_000_000_000_000u64,
        "network_mode": "bridge", "runs_as_root": false,
        "networks": [{"name": "bridge", "ip": "172.17.0.2", "prefix_len": 16, "ipv6": "fd00::2", "ipv6_prefix_len": 64,
                      "mac": "02:42:ac:11:00:02", "gateway": "172.17.0.1"}],
        "ports": [{"container_port": 8080, "protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 80},
                  {"container_port": 53, "protocol": "udp", "host_ip": "", "host_port": 0}]
    });
    let pod = json!({"name": "web-7d9f", "namespace": "shop", "uid": "6b1c7f0e", "sandbox": false,
                     "labels": {"app": "web", "tier": ""}, "ips": ["10.1.0.5", "fd01::5"]});
    let t = 1_763_000_000_000_000_000u64;
    let list = json!([
        {"kind": "process-exec", "time_ns": t, "process": process, "container": container, "pod": pod},
        {"kind": "process-exec", "time_ns": t + 1, "process": {"pid": 7, "tgid": 7, "comm": "sh", "exe": "/bin/sh",
            "argv": long_argv}},
        {"kind": "process-exec", "time_ns": t + 2, "process": {"pid": 8, "tgid": 8}},
        {"kind": "process-fork", "time_ns": t + 3, "process": {"pid": 9, "tgid": 9, "ppid": 8, "comm": "sh"}},
        {"kind": "process-exit", "time_ns": t + 4, "exit_code": -9, "process": {"pid": 9, "tgid": 9, "comm": "sh"}},
        {"kind": "cgroup-mkdir", "time_ns": t + 5, "cgroup": {"id": 77, "path": "/kubepods/pod1/abc"}},
        {"kind": "cgroup-rmdir", "time_ns": t + 6, "cgroup": {"id": 77, "path": "/kubepods/pod1/abc"}},
        {"kind": "container-create", "time_ns": t + 7, "container": container, "pod": pod},
        {"kind": "container-start", "time_ns": t + 8, "container": container},
        {"kind": "container-stop", "time_ns": t + 9, "exit_code": 137, "container": container},
        {"kind": "container-delete", "time_ns": t + 10, "container": {"id": "c0ffee", "runtime": "podman"}},
        {"kind": "events-lost", "time_ns": t + 11, "lost": {"count": 12345, "reason": "ring-buffer-full"}},
        {"kind": "container-copy-in", "time_ns": t + 12, "copy_path": "/etc/cron.d/x", "container": container},
        {"kind": "container-copy-out", "time_ns": t + 13, "copy_path": "/etc/shadow", "container": {"id": "c1"}},
    ]);
    serde_json::from_value(list).expect("the model reads these events")
}

fn config(cache: &std::path::Path) -> Config {
    let mut c = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    // A Python call can take a few milliseconds on a busy machine.
    c.dispatch.call_timeout = Duration::from_secs(2);
    c
}

/// The echo's JSON, from its fields `echo.00`, `echo.01`... in order.
fn echo_text(a: &vigil_engine::alert::Alert) -> String {
    let chunks: Vec<&str> = a
        .output_fields
        .iter()
        .filter(|(k, _)| k.starts_with("echo."))
        .map(|(_, v)| v.as_str().expect("a string field"))
        .collect();
    assert!(!chunks.is_empty(), "{}: no echo fields: {a:?}", a.rule);
    chunks.concat()
}

/// The events each echo rule read, as the model, by its alert's event.
fn echoed(rule: &str, alerts: &[vigil_engine::alert::Alert]) -> Vec<Event> {
    alerts
        .iter()
        .filter(|a| a.rule == rule)
        .map(|a| {
            let text = echo_text(a);
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rule}: its echo is not an event ({e}): {text}"))
        })
        .collect()
}

#[test]
fn every_kind_and_field_reaches_rules_as_the_host_was_given_it() {
    if !python_built() {
        return;
    }
    let rules = rule_dir(&RULES);
    let cache = tempfile::tempdir().unwrap();
    let given = events();
    let source = PacedSource { events: given.clone(), per_sec: 1_000_000, batch: 100, hooks: Vec::new() };
    let (summary, output) = run_pipeline(config(cache.path()), rules.path(), false, source);
    let alerts = output.alerts();
    for rule in RULES {
        let stats = &summary.rules.iter().find(|(id, _)| id == rule).unwrap_or_else(|| panic!("{rule} loaded")).1;
        assert_eq!(stats.faults(), 0, "{rule} never faulted");
        let read = echoed(rule, &alerts);
        assert_eq!(read.len(), given.len(), "{rule}: one alert per event, every kind");
        for (got, sent) in read.iter().zip(&given) {
            // The id is the daemon's sequence number, given by the pipeline.
            let sent = Event { id: got.id, ..sent.clone() };
            assert_eq!(got, &sent, "{rule} read what the host was given ({:?})", sent.kind);
        }
    }
    // The alert fields arrive as the rules wrote them: quotes, newlines, any text.
    let first = alerts.iter().find(|a| a.rule == "echo-all").unwrap();
    let first_py = alerts.iter().find(|a| a.rule == "echo-all-py").unwrap();
    let argv = |a: &vigil_engine::alert::Alert| -> Value {
        serde_json::from_str::<Value>(&echo_text(a)).unwrap()["process"]["argv"].clone()
    };
    assert_eq!(argv(first)[2], "echo \"quoted\" 'x'\nnewline\ttab \\ back");
    assert_eq!(argv(first), argv(first_py));
}

#[test]
fn metadata_reads_the_same_through_rules_check() {
    if !python_built() {
        return;
    }
    for rule in RULES {
        let out = vigil().args(["rules", "check"]).arg(rule_wasm(rule)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{rule}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("id:            {rule}")), "{text}");
        let kinds = "process-exec, process-fork, process-exit, cgroup-mkdir, cgroup-rmdir, container-create, \
                     container-start, container-stop, container-delete, events-lost, container-copy-in, container-copy-out";
        assert!(text.contains(&format!("subscriptions: {kinds}")), "{rule}: every kind:\n{text}");
        assert!(text.contains("version:       0.1.0") && text.contains("tags:          test"), "{text}");
    }
}

#[test]
fn a_config_init_refuses_keeps_the_rule_from_loading_with_its_message() {
    if !python_built() {
        return;
    }
    let rules = rule_dir(&RULES);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    let mut text = String::new();
    for rule in RULES {
        text.push_str(&format!("[rules.settings.{rule}.config]\nbogus = 1\n"));
    }
    std::fs::write(&cfg, text).unwrap();
    let out = vigil()
        .arg("replay")
        .arg(fixture("bundled.jsonl"))
        .arg("--rules")
        .arg(rules.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for rule in RULES {
        let line = log
            .lines()
            .find(|l| l.contains("cannot load rule") && l.contains(&format!("{rule}.wasm")))
            .unwrap_or_else(|| panic!("{rule} refused:\n{log}"));
        assert!(line.contains("bogus"), "{rule}: init's message names the key: {line}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).lines().all(|l| !l.contains("echo-all")), "neither ran");
}

#[test]
fn state_is_handed_over_on_a_hot_swap_under_load() {
    if !python_built() {
        return;
    }
    const N: usize = 20_000;
    let rules = rule_dir(&RULES);
    let cache = tempfile::tempdir().unwrap();
    let dir = rules.path().to_path_buf();
    let v2: Vec<(String, Vec<u8>)> = RULES
        .iter()
        .map(|rule| (format!("{rule}.wasm"), with_custom_section(&std::fs::read(rule_wasm(rule)).unwrap(), "v2")))
        .collect();
    // The new versions compiled into the cache first: compiling the 18 MB
    // Python component takes seconds on a busy machine, longer than the run.
    let staged = tempfile::tempdir().unwrap();
    for (name, bytes) in &v2 {
        std::fs::write(staged.path().join(name), bytes).unwrap();
    }
    let warm = PacedSource { events: vec![exec("/bin/ok", &["ok"])], per_sec: 1_000, batch: 1, hooks: Vec::new() };
    run_pipeline(config(cache.path()), staged.path(), false, warm);
    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = v2
        .into_iter()
        .map(|(name, bytes)| {
            let dir = dir.clone();
            (N / 10, Box::new(move || replace_atomically(&dir, &name, &bytes)) as Box<dyn FnOnce() + Send>)
        })
        .collect();
    let events: Vec<Event> = (0..N).map(|_| exec("/bin/ok", &["ok"])).collect();
    // Twenty seconds, the swap after two: under the full suite's load a
    // rescan, a load from the cache and the handover have taken more than eight.
    let source = PacedSource { events, per_sec: 1_000, batch: 50, hooks };
    let (summary, output) = run_pipeline(config(cache.path()), &dir, true, source);
    let swaps = summary.dispatch.swaps.load(std::sync::atomic::Ordering::Relaxed);
    assert!(swaps >= 4, "both loaded, both swapped: {swaps} swaps");
    let alerts = output.alerts();
    for rule in RULES {
        let seen: Vec<u64> = alerts
            .iter()
            .filter(|a| a.rule == rule)
            .map(|a| a.output_fields["seen"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(seen.len(), N, "{rule}: every event once");
        assert_eq!(seen, (1..=N as u64).collect::<Vec<_>>(), "{rule}: the count carried over the swap");
    }
}
