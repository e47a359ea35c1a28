//! Rules that loop, trap or hog memory are stopped, counted, rebuilt and
//! quarantined, while a good rule keeps alerting on every event.

use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_engine::config::Config;
use vigil_engine::plugin::policy::RulePolicy;

use crate::support::*;

fn config(cache: &std::path::Path) -> Config {
    let mut c = Config { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    c.dispatch.call_timeout = Duration::from_millis(20);
    c.dispatch.memory_limit = bytesize::ByteSize::mib(16);
    c.dispatch.max_faults = 3;
    c.dispatch.quarantine_initial = Duration::from_millis(300);
    // The good rule must see every event: a generous deadline of its own, so
    // a call preempted while the bad rules burn CPU is not taken for a hang.
    let echo: vigil_engine::config::RuleSettings = toml::from_str("call_timeout = \"2s\"").unwrap();
    c.rules.settings.insert("echo".into(), echo.clone());
    // The hog must run into its memory cap, not a deadline, even on a busy machine.
    c.rules.settings.insert("hog".into(), echo);
    c
}

#[test]
fn misbehaving_rules_are_isolated_and_a_good_rule_keeps_alerting() {
    let rules = rule_dir(&["echo", "spin", "trap", "hog"]);
    let cache = tempfile::tempdir().unwrap();
    // Each kind of bad event once per 100-event batch, for 10 batches, then
    // a calm stretch after the quarantine ends.
    let mut events = Vec::new();
    for round in 0..10 {
        for i in 0..100 {
            events.push(match (round % 3, i) {
                (0, 10) => exec("/bin/x", &["x", "spin"]),
                (1, 20) => exec("/bin/x", &["x", "trap"]),
                (2, 30) => exec("/bin/x", &["x", "hog"]),
                _ => exec("/bin/ok", &["ok"]),
            });
        }
    }
    let calm: Vec<_> = ["/bin/spin-ok", "/bin/trap-ok", "/bin/hog-ok"].iter().map(|e| exec(e, &["ok"])).collect();
    let total = events.len() + 3 * 400;
    let source = PacedSource {
        events: events.into_iter().chain((0..400).flat_map(|_| calm.clone())).collect(),
        per_sec: 2_000,
        batch: 100,
        hooks: vec![],
    };
    let (summary, output) = run_pipeline(config(cache.path()), rules.path(), false, source);
    let alerts = output.alerts();

    let echo = alerts.iter().filter(|a| a.rule == "echo").count();
    assert_eq!(echo, total, "the good rule saw every event");

    let stats = |id: &str| summary.rules.iter().find(|(r, _)| r == id).unwrap().1.clone();
    let spin = stats("spin");
    let trap = stats("trap");
    let hog = stats("hog");
    assert!(spin.timeouts.load(Ordering::Relaxed) >= 1, "spin timed out");
    assert_eq!(spin.traps.load(Ordering::Relaxed), 0);
    assert!(trap.traps.load(Ordering::Relaxed) >= 1, "trap trapped");
    assert!(hog.memory_faults.load(Ordering::Relaxed) >= 1, "hog hit its memory limit");
    for (id, s) in [("spin", &spin), ("trap", &trap), ("hog", &hog)] {
        assert!(s.quarantines.load(Ordering::Relaxed) >= 1, "{id} was quarantined after repeated faults");
        assert!(s.events_skipped.load(Ordering::Relaxed) > 0, "{id} skipped events while quarantined");
    }
    // After quarantine each misbehaving rule runs again and works.
    for (id, msg) in [("spin", "spin rule alive"), ("trap", "trap rule alive"), ("hog", "hog rule alive")] {
        assert!(alerts.iter().any(|a| a.rule == id && a.output == msg), "{id} recovered after its quarantine");
    }
    assert_eq!(stats("echo").faults(), 0);
}

#[test]
fn a_rule_cannot_read_host_files() {
    let rules = rule_dir(&["hog"]);
    let cache = tempfile::tempdir().unwrap();
    let source =
        PacedSource { events: vec![exec("/bin/x", &["x", "read-host"])], per_sec: 1000, batch: 1, hooks: vec![] };
    let (summary, output) = run_pipeline(config(cache.path()), rules.path(), false, source);
    // The WASI filesystem is not linked: the call traps rather than reading.
    let alerts = output.alerts();
    assert!(alerts.iter().all(|a| a.output != "host file read: true"), "{alerts:?}");
    let hog = &summary.rules[0].1;
    assert_eq!(hog.traps.load(Ordering::Relaxed), 1, "denied WASI import trapped");
}

#[test]
fn a_wasi_grant_gives_exactly_the_granted_directory() {
    let rules = rule_dir(&["hog"]);
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(cache.path());
    // Its own settings replace config()'s: keep the generous deadline (a
    // file read on a machine busy with other tests can take 20 ms of wall
    // clock, and deadlines are wall-clock).
    let grant: vigil_engine::config::RuleSettings =
        toml::from_str(&format!("call_timeout = \"2s\"\nwasi = {{ read_dirs = [{:?}] }}", "/etc")).unwrap();
    config.rules.settings.insert("hog".into(), grant);
    let source =
        PacedSource { events: vec![exec("/bin/x", &["x", "read-host"])], per_sec: 1000, batch: 1, hooks: vec![] };
    let (summary, output) = run_pipeline(config, rules.path(), false, source);
    let alerts = output.alerts();
    assert!(alerts.iter().any(|a| a.output == "host file read: true"), "granted /etc is readable: {alerts:?}");
    assert_eq!(summary.rules[0].1.faults(), 0);
}

#[test]
fn a_rule_granted_wasi_cannot_block_the_daemon() {
    let rules = rule_dir(&["hog", "echo"]);
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(cache.path());
    let grant: vigil_engine::config::RuleSettings =
        toml::from_str("call_timeout = \"2s\"\nwasi = { stdio = true }").unwrap();
    config.rules.settings.insert("hog".into(), grant);
    let events = vec![exec("/bin/x", &["x", "sleep"]), exec("/bin/hog-ok", &["ok"])];
    let source = PacedSource { events, per_sec: 10, batch: 1, hooks: vec![] };
    let started = std::time::Instant::now();
    let (summary, output) = run_pipeline(config, rules.path(), false, source);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the sleeping rule did not hang dispatch");
    let hog = &summary.rules.iter().find(|(id, _)| id == "hog").unwrap().1;
    assert_eq!(hog.traps.load(Ordering::Relaxed), 1, "the blocking poll trapped");
    let alerts = output.alerts();
    assert!(alerts.iter().any(|a| a.rule == "hog" && a.output == "hog rule alive"), "rebuilt and running: {alerts:?}");
    assert_eq!(alerts.iter().filter(|a| a.rule == "echo").count(), 2);
}

/// The watchdog interrupts a call by moving the engine's epoch, which every
/// store sees: a call on another thread that is within its own deadline
/// must run on through those moves, and only the overdue calls trap.
#[test]
fn an_overdue_rule_on_one_thread_does_not_cut_short_a_call_in_time_on_another() {
    use vigil_engine::plugin::host::{HostSettings, PluginHost, content_hash};
    use vigil_engine::plugin::rule::{Loaded, LoadedRule};

    let host = PluginHost::new(&HostSettings { cache_dir: None }).unwrap();
    let bytes = std::fs::read(rule_wasm("spin")).unwrap();
    let hash = content_hash(&bytes);
    let load = |timeout: Duration| {
        let mut config = config(std::path::Path::new("/nonexistent"));
        config.dispatch.call_timeout = timeout;
        config.dispatch.max_faults = u32::MAX;
        let policy = RulePolicy::new(&config);
        match LoadedRule::load(&host, std::path::Path::new("spin.wasm"), &bytes, &hash, &|m| policy.resolve(m)) {
            Ok(Loaded::Rule(rule)) => rule,
            _ => panic!("spin loads"),
        }
    };
    let mut overdue = load(Duration::from_millis(5));
    let mut in_time = load(Duration::from_secs(30));
    let batch = |argv: &[&str]| {
        let mut out = Vec::new();
        vigil_engine::event::packed::encode_batch([&exec("/bin/x", argv)], &mut out);
        out
    };
    let (hang, busy) = (batch(&["x", "spin"]), batch(&["x", "busy", "500000000"]));

    let done = std::sync::atomic::AtomicBool::new(false);
    let (result, busy_for) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                assert!(overdue.on_batch(&hang, 1).is_err(), "the hanging call faults");
            }
        });
        let started = std::time::Instant::now();
        let result = in_time.on_batch(&busy, 1);
        done.store(true, Ordering::Relaxed);
        (result, started.elapsed())
    });
    let timeouts = overdue.stats.timeouts.load(Ordering::Relaxed);
    // The busy call spanned several deadlines of the other rule, each an epoch move.
    assert!(timeouts >= 3, "the hanging rule timed out {timeouts} times during a {busy_for:?} call");
    let alerts = result.unwrap_or_else(|f| panic!("the call in time ran to its end, not {f} ({timeouts} epoch moves)"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(in_time.stats.timeouts.load(Ordering::Relaxed), 0);
}

/// A rule that floods (a hundred alerts per event) is cut to what a batch
/// can explain and counted; one that returns a giant string (4 MiB per
/// event) is refused unparsed, faulted and quarantined; a good rule beside
/// them raises every alert it raises alone.
#[test]
fn a_flood_of_alerts_or_a_giant_return_is_bounded_and_a_good_rule_keeps_alerting() {
    for (alerts, message_bytes, floods) in [(100usize, 16usize, true), (1, 4 << 20, false)] {
        let rules = rule_dir(&["echo", "flood"]);
        let cache = tempfile::tempdir().unwrap();
        let mut c = config(cache.path());
        c.rules.settings.insert(
            "flood".into(),
            toml::from_str(&format!(
                "call_timeout = \"5s\"\nmemory_limit = \"256MiB\"\nconfig = {{ alerts = {alerts}, message_bytes = {message_bytes} }}"
            ))
            .unwrap(),
        );
        // Shaping off (run_pipeline): every alert kept reaches the output.
        let events: Vec<_> = (0..1000).map(|_| exec("/bin/ok", &["ok"])).collect();
        let source = PacedSource { events, per_sec: 5_000, batch: 100, hooks: vec![] };
        let (summary, output) = run_pipeline(c, rules.path(), false, source);
        let alerts_out = output.alerts();
        let echo = alerts_out.iter().filter(|a| a.rule == "echo").count();
        assert_eq!(echo, 1000, "the good rule saw every event");
        let flood = summary.rules.iter().find(|(r, _)| r == "flood").unwrap().1.clone();
        let kept = alerts_out.iter().filter(|a| a.rule == "flood").count();
        if floods {
            assert!(kept <= 4 * 1000, "at most 4 alerts per event kept: {kept}");
            assert!(kept >= 1000, "the flood's first alerts are kept: {kept}");
            assert!(flood.alerts_dropped.load(Ordering::Relaxed) > 0, "the rest are counted");
        } else {
            assert_eq!(kept, 0, "a giant return is not parsed");
            assert!(flood.faults() >= 1 && flood.quarantines.load(Ordering::Relaxed) >= 1, "faulted, quarantined");
        }
    }
}

/// A pod with ~600 KB of labels once made every exec rule exceed its memory
/// cap and be quarantined, and the attacks that followed went unalerted
/// (batches are now split at 1 MiB, which alone would carry that one). Here
/// each event carries 2 × 40 MB of labels, more than a rule's memory: the
/// events are cut to the per-event bounds and flagged, every rule keeps
/// running, and every attack from that pod is alerted.
#[test]
fn an_oversized_event_degrades_itself_never_the_rules() {
    use std::sync::Arc;
    use vigil_engine::event::{Container, Pod};
    let rules = rule_dir(&["echo", "crypto-miner"]);
    let cache = tempfile::tempdir().unwrap();
    let mut c = config(cache.path());
    // The cap the bundled DaemonSet's rules get, not the test's 16 MiB.
    c.dispatch.memory_limit = bytesize::ByteSize::mib(64);
    c.rules.settings.insert("crypto-miner".into(), toml::from_str("call_timeout = \"2s\"").unwrap());
    let labels: Vec<(String, String)> = (0..400_000).map(|i| (format!("annotation-{i:06}"), "x".repeat(90))).collect();
    let container = Arc::new(Container {
        id: "e".repeat(64),
        name: "huge-labels".into(),
        image: "shop/web:1".into(),
        labels: labels.clone(),
        ..Default::default()
    });
    let pod = Arc::new(Pod { name: "web-0".into(), namespace: "shop".into(), labels, ..Default::default() });
    let (mut events, mut miners) = (Vec::new(), 0);
    for i in 0..500 {
        let mut e = if i % 50 == 25 {
            miners += 1;
            exec("/tmp/xmrig", &["xmrig", "-o", "stratum+tcp://pool.example:3333"])
        } else {
            exec("/bin/ok", &["ok"])
        };
        e.container = Some(container.clone());
        e.pod = Some(pod.clone());
        events.push(e);
    }
    let source = PacedSource { events, per_sec: 20_000, batch: 100, hooks: vec![] };
    let (summary, output) = run_pipeline(c, rules.path(), false, source);
    let alerts = output.alerts();
    assert_eq!(alerts.iter().filter(|a| a.rule == "echo").count(), 500, "the good rule saw every event");
    assert_eq!(alerts.iter().filter(|a| a.rule == "crypto-miner").count(), miners, "every attack alerted");
    for (id, s) in &summary.rules {
        assert_eq!(s.faults(), 0, "{id} never faulted");
    }
    assert_eq!(summary.dispatch.events_truncated.load(Ordering::Relaxed), 500, "each cut and flagged");
}
