//! Hot reload under a steady stream: the `echo` rule (one alert per event,
//! with a counter in its state) is replaced by rename, by `mv` from outside,
//! overwritten with garbage, then rewritten in place, while 100K events/s
//! flow. Every event must be alerted on exactly once, the counter must carry
//! across versions, and a second rule must not notice.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use vigil_engine::config::Config;

use crate::support::*;

/// These tests are about swapping: a generous call deadline, so a call
/// preempted on a loaded 2-core machine is not mistaken for a hung rule (the
/// deadline is wall-clock; the sandbox tests cover it).
fn swap_config(cache: &std::path::Path) -> Config {
    let mut c = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    c.dispatch.call_timeout = std::time::Duration::from_secs(2);
    // Echo alerts on every event, 100,000 a second: above the per-rule
    // safety valve, which is not what these tests are about.
    c.dispatch.max_alerts_per_sec = 10_000_000;
    c
}

#[test]
fn swaps_under_load_lose_and_duplicate_nothing() {
    const N: usize = 300_000;
    let rules = rule_dir(&["echo", "crypto-miner"]);
    let outside = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let original = std::fs::read(rule_wasm("echo")).unwrap();
    let dir = rules.path().to_path_buf();

    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = vec![
        (50_000, {
            let (dir, bytes) = (dir.clone(), with_custom_section(&original, "v2"));
            Box::new(move || replace_atomically(&dir, "echo.wasm", &bytes))
        }),
        (120_000, {
            let (dir, out, bytes) = (dir.clone(), outside.path().to_path_buf(), with_custom_section(&original, "v3"));
            Box::new(move || {
                let staged = out.join("echo.wasm");
                std::fs::write(&staged, &bytes).unwrap();
                std::fs::rename(&staged, dir.join("echo.wasm")).unwrap(); // mv over
            })
        }),
        (190_000, {
            let dir = dir.clone();
            Box::new(move || std::fs::write(dir.join("echo.wasm"), b"\0asm garbage that will not compile").unwrap())
        }),
        (230_000, {
            let (dir, bytes) = (dir.clone(), with_custom_section(&original, "v4"));
            Box::new(move || std::fs::write(dir.join("echo.wasm"), &bytes).unwrap()) // in place
        }),
    ];
    let events: Vec<_> = (0..N).map(|_| exec("/bin/ok", &["ok"])).collect();
    let source = PacedSource { events, per_sec: 100_000, batch: 100, hooks };
    let config = swap_config(cache.path());
    let (summary, output) = run_pipeline(config, &dir, true, source);

    let echo = &summary.rules.iter().find(|(id, _)| id == "echo").unwrap().1;
    assert_eq!(echo.faults(), 0, "no call faulted (a timed-out batch would be lost to the rule by design)");
    let alerts = output.alerts();
    let mut ids = HashSet::new();
    let mut max_seen = 0u64;
    for a in alerts.iter().filter(|a| a.rule == "echo") {
        let id: u64 = a.output_fields["event_id"].as_str().unwrap().parse().unwrap();
        assert!(ids.insert(id), "event {id} alerted twice");
        max_seen = max_seen.max(a.output_fields["seen"].as_str().unwrap().parse().unwrap());
    }
    assert_eq!(ids.len(), N, "every event alerted once");
    assert_eq!(ids.iter().max(), Some(&(N as u64)));
    assert_eq!(max_seen, N as u64, "the counter carried across every version (state handed over)");

    let swaps = summary.dispatch.swaps.load(Ordering::Relaxed);
    assert!(swaps >= 2 + 3, "initial loads plus three replacements, got {swaps}");
    let other = &summary.rules.iter().find(|(id, _)| id == "crypto-miner").unwrap().1;
    assert_eq!(other.events_in.load(Ordering::Relaxed), N as u64, "the other rule saw every event");
    assert_eq!(other.faults(), 0);
    // The final file is the v4 component: it is what runs now.
    let final_bytes = std::fs::read(dir.join("echo.wasm")).unwrap();
    assert_eq!(final_bytes, with_custom_section(&original, "v4"));
}

#[test]
fn removing_and_adding_rule_files_takes_effect() {
    let rules = rule_dir(&["echo"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = rules.path().to_path_buf();
    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = vec![
        (2_000, {
            let dir = dir.clone();
            Box::new(move || std::fs::remove_file(dir.join("echo.wasm")).unwrap())
        }),
        (6_000, {
            let dir = dir.clone();
            Box::new(move || {
                let bytes = std::fs::read(rule_wasm("echo")).unwrap();
                replace_atomically(&dir, "echo.wasm", &bytes);
            })
        }),
    ];
    let events: Vec<_> = (0..10_000).map(|_| exec("/bin/ok", &["ok"])).collect();
    let source = PacedSource { events, per_sec: 10_000, batch: 50, hooks };
    let config = swap_config(cache.path());
    let (_, output) = run_pipeline(config, &dir, true, source);
    let ids: Vec<u64> =
        output.alerts().iter().map(|a| a.output_fields["event_id"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.iter().any(|&i| i <= 2_000), "alerts before removal");
    assert!(!ids.iter().any(|&i| (3_000..=6_000).contains(&i)), "no alerts while the rule was absent");
    assert!(ids.iter().any(|&i| i > 7_000), "alerts after it came back");
}

#[test]
fn renaming_a_rule_file_keeps_its_state_and_loses_nothing() {
    const N: usize = 60_000;
    let rules = rule_dir(&["echo"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = rules.path().to_path_buf();
    let hooks: Vec<(usize, Box<dyn FnOnce() + Send>)> = vec![(20_000, {
        let dir = dir.clone();
        Box::new(move || std::fs::rename(dir.join("echo.wasm"), dir.join("echo-renamed.wasm")).unwrap())
    })];
    let events: Vec<_> = (0..N).map(|_| exec("/bin/ok", &["ok"])).collect();
    let source = PacedSource { events, per_sec: 50_000, batch: 100, hooks };
    let config = swap_config(cache.path());
    let (summary, output) = run_pipeline(config, &dir, true, source);
    let alerts = output.alerts();
    let ids: HashSet<u64> =
        alerts.iter().map(|a| a.output_fields["event_id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!((ids.len(), alerts.len()), (N, N), "every event once across the rename");
    let max_seen: u64 =
        alerts.iter().map(|a| a.output_fields["seen"].as_str().unwrap().parse::<u64>().unwrap()).max().unwrap();
    assert_eq!(max_seen, N as u64, "state moved with the rename");
    assert!(summary.dispatch.swaps.load(Ordering::Relaxed) >= 2, "the rename was seen");
}

/// Files that claim the same rule id are all refused, each with an error
/// naming both paths, and the daemon raises a Critical alert: a file can
/// never shadow another's rule, whichever name sorts first and whichever
/// came first. Once one of them is gone, the other loads.
#[test]
fn a_file_claiming_another_rules_id_does_not_shadow_it() {
    use vigil_engine::plugin::dispatch::Control;
    use vigil_engine::plugin::host::{HostSettings, PluginHost};
    use vigil_engine::plugin::policy::RulePolicy;
    use vigil_engine::plugin::ruledir::RuleDir;
    let host = PluginHost::new(&HostSettings { cache_dir: None }).unwrap();
    let policy = RulePolicy::default();
    let settings = |m: &vigil_engine::plugin::meta::RuleMeta| policy.resolve(m);
    let echo = std::fs::read(rule_wasm("echo")).unwrap();
    let names = |failed: &[(std::path::PathBuf, String)]| -> Vec<String> {
        failed.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect()
    };
    let alarms = |controls: &[Control]| -> Vec<String> {
        controls.iter().filter_map(|c| if let Control::Alarm(a) = c { Some(a.message.clone()) } else { None }).collect()
    };
    let upserts = |controls: &[Control]| controls.iter().filter(|c| matches!(c, Control::Upsert(_))).count();

    // Both in one scan.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aaa-impostor.wasm"), &echo).unwrap();
    std::fs::write(dir.path().join("echo.wasm"), &echo).unwrap();
    let (controls, report) = RuleDir::new(dir.path()).scan(&host, &settings).unwrap();
    assert_eq!(names(&report.failed), ["aaa-impostor.wasm", "echo.wasm"], "{:?}", report.failed);
    for (_, msg) in &report.failed {
        assert!(msg.contains("aaa-impostor.wasm") && msg.contains("echo.wasm"), "names both paths: {msg}");
    }
    assert_eq!(upserts(&controls), 0, "neither runs");
    assert_eq!(alarms(&controls).len(), 1, "one Critical alert");

    // The impostor arrives after the real one was loaded: the real one is
    // unloaded too, loudly, and loads again once the impostor is gone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.wasm"), &echo).unwrap();
    let mut rules = RuleDir::new(dir.path());
    let (_, first) = rules.scan(&host, &settings).unwrap();
    assert_eq!(first.loaded, ["echo"]);
    std::fs::write(dir.path().join("zzz-impostor.wasm"), &echo).unwrap();
    let (controls, second) = rules.scan(&host, &settings).unwrap();
    assert_eq!(names(&second.failed), ["echo.wasm", "zzz-impostor.wasm"]);
    assert!(
        controls.iter().any(|c| matches!(c, Control::Remove(p) if p.ends_with("echo.wasm"))),
        "the running one stops"
    );
    assert_eq!(upserts(&controls), 0);
    assert!(alarms(&controls)[0].contains("zzz-impostor.wasm"), "{:?}", alarms(&controls));
    std::fs::remove_file(dir.path().join("zzz-impostor.wasm")).unwrap();
    let (controls, third) = rules.scan(&host, &settings).unwrap();
    assert_eq!(third.loaded, ["echo"], "{:?}", third.failed);
    assert_eq!(upserts(&controls), 1);
}
