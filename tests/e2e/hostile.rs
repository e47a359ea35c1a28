//! Hostile rules: `tests/rules/hostile`, built from `wit/` with wit-bindgen
//! alone (so it does what the SDK would not let it), run by the real
//! daemon (`vigil run --realtime --replay`, a steady stream) next to two
//! good rules (`echo`, alerting on every event, and `crypto-miner`). For
//! each attack: the daemon stays up and exits cleanly, the good rules raise
//! every alert they raise alone, the daemon's peak memory stays under a
//! stated bound, and the hostile rule is faulted, throttled or cut down,
//! as its figures and the log say.
//!
//! The other hostile inputs the issue lists are tested where they live:
//! oversized labels and argv (`sandbox::an_oversized_event_degrades_itself_never_the_rules`),
//! planted, foreign, linked and sparse huge rule files (`rule_dir_trust`),
//! the compile cache swapped after the start (`plugin::cache` unit tests),
//! damaged spools (`output::spool` unit tests), fake container
//! cgroup names (`enrich::cgroup_path` unit tests).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Events of a run, at [`RATE`] per second.
const EVENTS: usize = 6_000;
const RATE: u64 = 3_000;
/// One event in this many is a miner.
const MINER_EVERY: usize = 100;
/// The daemon's peak RSS may exceed the good rules' run alone by this much.
const RSS_HEADROOM_KIB: u64 = 128 << 10;

struct Outcome {
    /// Alerts by rule name.
    alerts: BTreeMap<String, Vec<Value>>,
    /// The final `rule figures` log line of each rule.
    figures: BTreeMap<String, Value>,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
}

impl Outcome {
    fn count(&self, rule: &str) -> usize {
        self.alerts.get(rule).map_or(0, Vec::len)
    }
    fn figure(&self, rule: &str, name: &str) -> u64 {
        self.figures.get(rule).and_then(|f| f[name].as_u64()).unwrap_or(0)
    }
}

fn replay_file(dir: &Path) -> std::path::PathBuf {
    let mut lines = String::from("{\"vigil-replay\": 1}\n");
    let t0 = 1_700_000_000_000_000_000u64;
    for i in 0..EVENTS {
        let (exe, argv) = if i % MINER_EVERY == 50 {
            ("/tmp/xmrig", r#"["xmrig","-o","stratum+tcp://pool.example:3333"]"#)
        } else {
            ("/bin/ok", r#"["ok"]"#)
        };
        lines.push_str(&format!(
            r#"{{"kind":"process-exec","time_ns":{},"process":{{"pid":{},"tgid":{},"comm":"x","exe":"{exe}","argv":{argv}}}}}"#,
            t0 + i as u64 * (1_000_000_000 / RATE),
            1000 + i,
            1000 + i,
        ));
        lines.push('\n');
    }
    let path = dir.join("stream.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// Runs the daemon over the stream with `rules` (file name, test rule) and
/// `extra` config; follows its peak RSS until it exits.
fn run(rules: &[(&str, &str)], extra: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let rule_dir = dir.path().join("rules");
    std::fs::create_dir(&rule_dir).unwrap();
    for (file, id) in rules {
        std::fs::copy(rule_wasm(id), rule_dir.join(file)).unwrap();
    }
    let cfg = dir.path().join("vigil.toml");
    let cache = dir.path().join("cache");
    std::fs::write(
        &cfg,
        format!(
            "cache_dir = {cache:?}\n[log]\nformat = \"json\"\n[alerts]\ndedup_window = \"0s\"\nrule_rate = 0\nglobal_rate = 0\n{extra}\n"
        ),
    )
    .unwrap();
    let replay = replay_file(dir.path());
    let mut cmd = vigil();
    cmd.args(["run", "--realtime", "--replay"]).arg(&replay).arg("--rules").arg(&rule_dir).arg("--config").arg(&cfg);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Reaped::spawn(cmd);
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let (status, peak_rss_kib) = child.wait_with_peak_rss(Duration::from_secs(120));
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(status, 0, "the daemon exits cleanly; its log:\n{}", tail(&stderr));
    let mut alerts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in stdout.lines() {
        let a: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("an alert per line ({e}): {line:?}"));
        alerts.entry(a["rule"].as_str().unwrap().to_string()).or_default().push(a);
    }
    let mut figures = BTreeMap::new();
    for line in stderr.lines() {
        let Ok(l) = serde_json::from_str::<Value>(line) else { continue };
        if l["fields"]["message"] == "rule figures" {
            figures.insert(l["fields"]["rule"].as_str().unwrap_or_default().to_string(), l["fields"].clone());
        }
    }
    Outcome { alerts, figures, stdout, stderr, peak_rss_kib }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A child process, its peak RSS followed while it runs (`VmHWM`: ru_maxrss
/// would count the test process's image, which the child had before its
/// exec); killed if the test fails first.
struct Reaped(std::process::Child, bool);

impl Reaped {
    fn spawn(mut cmd: Command) -> Self {
        Reaped(cmd.spawn().expect("vigil starts"), false)
    }

    /// Exit code and peak RSS (KiB).
    fn wait_with_peak_rss(&mut self, timeout: Duration) -> (i32, u64) {
        let deadline = Instant::now() + timeout;
        let status_file = format!("/proc/{}/status", self.0.id());
        let mut peak = 0;
        loop {
            // Read before the exit is seen: the last read is within ~10 ms of it.
            if let Ok(status) = std::fs::read_to_string(&status_file)
                && let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))
            {
                peak = peak.max(kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
            if let Some(status) = self.0.try_wait().expect("waitpid") {
                self.1 = true;
                return (status.code().unwrap_or(-1), peak);
            }
            assert!(Instant::now() < deadline, "the daemon did not finish within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.1 {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

const GOOD: [(&str, &str); 2] = [("echo.wasm", "echo"), ("crypto-miner.wasm", "crypto-miner")];

fn with_hostile(mode: &str, settings: &str) -> Outcome {
    let rules = [GOOD[0], GOOD[1], ("hostile.wasm", "hostile")];
    run(&rules, &format!("[rules.settings.hostile]\nconfig = {{ mode = \"{mode}\" {settings} }}\n"))
}

/// What the good rules raise alone, and the peak memory then.
fn baseline() -> Outcome {
    let alone = run(&GOOD, "");
    assert_eq!(alone.count("echo"), EVENTS, "echo alerts on every event");
    assert_eq!(alone.count("crypto-miner"), EVENTS / MINER_EVERY);
    alone
}

/// The good rules raised everything they raise alone, within the memory bound.
fn assert_unharmed(case: &str, o: &Outcome, alone: &Outcome) {
    assert_eq!(o.count("echo"), alone.count("echo"), "{case}: echo saw every event");
    assert_eq!(o.count("crypto-miner"), alone.count("crypto-miner"), "{case}: every miner alerted");
    for good in ["echo", "crypto-miner"] {
        assert_eq!(o.figure(good, "faults"), 0, "{case}: {good} never faulted");
        assert_eq!(o.figure(good, "skipped"), 0, "{case}: {good} skipped nothing");
    }
    assert!(
        o.peak_rss_kib <= alone.peak_rss_kib + RSS_HEADROOM_KIB,
        "{case}: peak RSS {} KiB, the good rules alone {} KiB",
        o.peak_rss_kib,
        alone.peak_rss_kib
    );
    eprintln!(
        "hostile {case}: peak RSS {} KiB (alone {} KiB); hostile: {} faults, {} quarantines, {} skipped, {} throttled, {} restarts, {} alerts dropped",
        o.peak_rss_kib,
        alone.peak_rss_kib,
        o.figure("hostile", "faults"),
        o.figure("hostile", "quarantines"),
        o.figure("hostile", "skipped"),
        o.figure("hostile", "throttled"),
        o.figure("hostile", "restarts"),
        o.figure("hostile", "alerts_dropped"),
    );
}

/// Returns bounded before they are parsed, alerts bounded before they are
/// built, and a hostile rule's faults turned into a quarantine and a
/// Critical alert.
#[test]
fn hostile_returns_are_bounded_and_the_good_rules_keep_alerting() {
    let alone = baseline();

    let giant = with_hostile("giant", "");
    assert_unharmed("giant return", &giant, &alone);
    assert!(giant.figure("hostile", "faults") >= 1, "a giant return is a fault");
    assert!(giant.figure("hostile", "quarantines") >= 1);
    assert_eq!(giant.count("hostile"), 0, "nothing of it parsed");
    let alarm = &giant.alerts.get("Vigil rule quarantined").expect("a Critical alert about the quarantine")[0];
    assert_eq!(alarm["priority"], "Critical");
    assert_eq!(alarm["output_fields"]["vigil.rule.id"], "hostile");

    let flood = with_hostile("flood", "");
    assert_unharmed("alert flood", &flood, &alone);
    let kept = flood.count("hostile");
    // 4 per event of a batch, at least 16 per call (a live stream's
    // batches are small), and 50,000 a second at most.
    assert!(kept <= 16 * EVENTS, "at most 16 alerts per event: {kept}");
    assert!(kept as u64 <= 50_000 * (EVENTS as u64 / RATE + 1), "at most 50,000 a second: {kept}");
    assert!(flood.figure("hostile", "alerts_dropped") > 0, "the rest dropped and counted");

    let bad = with_hostile("bad-index", "");
    assert_unharmed("bad event index", &bad, &alone);
    assert_eq!(bad.count("hostile"), 0);
    let warnings = bad.stderr.matches("alert names an event outside its batch").count();
    assert!(warnings <= 10 * 4, "the host's warnings about one rule are rate-limited: {warnings}");
}

/// What a rule writes into the log or its alerts cannot forge lines.
#[test]
fn a_rule_cannot_forge_log_lines_or_alert_lines() {
    let alone = baseline();
    let o = with_hostile("log-injection", "");
    assert_unharmed("log injection", &o, &alone);
    assert!(o.count("hostile") > 0);
    for line in o.stderr.lines() {
        assert!(!line.starts_with("2026-12-07T00:00:00.000000Z"), "a forged log line: {line}");
        assert!(!line.contains('\x1b'), "a terminal escape reached the log: {line:?}");
    }
    // Alerts are JSON lines: a newline or an escape in a message is escaped,
    // one alert stays one line (each line parsed above).
    assert!(!o.stdout.contains('\x1b'), "a raw escape in the alert stream");
    assert!(o.alerts["hostile"].iter().all(|a| a["output"].as_str().unwrap().contains("FORGED")));
}

/// A slow rule within its deadline is throttled to its CPU budget; a rule
/// whose `init` is slow is rebuilt off the dispatching thread. Neither
/// takes an event from the good rules.
#[test]
fn a_slow_rule_is_throttled_and_a_slow_rebuild_runs_off_the_dispatching_thread() {
    let alone = baseline();
    // 30 ms of CPU per batch, within its own deadline of 100 ms: the
    // dispatching thread is soon busy all the time, and the rule over its
    // budget (100 ms a second, so that the 2 s run outlasts its burst).
    let slow = run(
        &[GOOD[0], GOOD[1], ("hostile.wasm", "hostile")],
        "[rules.settings.hostile]\ncall_timeout = \"100ms\"\ncpu_budget = \"100ms\"\n\
         config = { mode = \"slow\", busy_us = 30000 }\n",
    );
    assert_unharmed("slow but legal", &slow, &alone);
    assert_eq!(slow.figure("hostile", "faults"), 0, "within its deadline");
    assert!(slow.figure("hostile", "throttled") > 0, "over its CPU budget: throttled");
    assert!(slow.stderr.contains("over its CPU budget"), "and said so");
    // What it missed, it is told of when it runs again (an events-lost event).
    let told: u64 = slow.alerts["hostile"]
        .iter()
        .filter_map(|a| a["output"].as_str().unwrap().strip_suffix(" rule-throttled"))
        .map(|n| n.strip_prefix("lost ").unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(told > 0 && told <= slow.figure("hostile", "throttled"), "told of {told} lost events");

    let rebuilt = with_hostile("slow-init", ", init_ms = 300, trap_every = 20");
    assert_unharmed("slow init on rebuild", &rebuilt, &alone);
    assert!(rebuilt.figure("hostile", "restarts") >= 1, "rebuilt after its faults");
}

/// Two files claiming one id: neither runs, a Critical alert names both.
#[test]
fn an_impostor_id_is_refused_with_the_rule_it_claims_and_raises_an_alert() {
    let alone = baseline();
    let rules = [GOOD[0], GOOD[1], ("hostile.wasm", "hostile"), ("aaa-impostor.wasm", "hostile")];
    let o = run(&rules, "");
    assert_unharmed("id impostor", &o, &alone);
    assert!(!o.figures.contains_key("hostile"), "neither file runs");
    let alarm = &o.alerts.get("Vigil rule id claimed twice").expect("a Critical alert")[0];
    let text = alarm["output"].as_str().unwrap();
    assert!(text.contains("aaa-impostor.wasm") && text.contains("hostile.wasm"), "{text}");
}

/// Unprivileged busy loops (four per core) compete with the daemon. A
/// healthy but heavy rule (3 ms of work per call, a third of its 10 ms
/// deadline, with CPU budget to spare) and the good rules run beside them:
/// on CPU-time deadlines (the default) none of them times out, however
/// long it waits for a core. `VIGIL_CONTENTION_CLOCK=wall` runs the same
/// on wall-clock deadlines, for the figure in BENCHMARKS.md (it then
/// prints the timeouts instead of failing on them).
#[test]
fn cpu_contention_from_unprivileged_busy_loops_faults_no_healthy_rule() {
    if !is_root() {
        return skipped("cpu contention", "needs root to run the busy loops as nobody");
    }
    let clock = std::env::var("VIGIL_CONTENTION_CLOCK").unwrap_or_else(|_| "cpu".into());
    let alone = baseline();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loops: Vec<Reaped> = (0..4 * cores)
        .map(|_| {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "while :; do :; done"]).uid(65534).gid(65534);
            Reaped::spawn(c)
        })
        .collect();
    let rules = [GOOD[0], GOOD[1], ("hostile.wasm", "hostile")];
    let o = run(
        &rules,
        &format!(
            "[dispatch]\ndeadline_clock = \"{clock}\"\n[rules.settings.hostile]\ncpu_budget = \"1s\"\n\
             config = {{ mode = \"slow\", busy_us = 3000 }}\n"
        ),
    );
    drop(loops);
    let timeouts: Vec<(String, u64)> =
        o.figures.iter().map(|(r, f)| (r.clone(), f["faults"].as_u64().unwrap_or(0))).collect();
    eprintln!(
        "contention, {clock} deadlines: faults by rule {timeouts:?}; echo {} of {EVENTS}, crypto-miner {} of {}",
        o.count("echo"),
        o.count("crypto-miner"),
        EVENTS / MINER_EVERY
    );
    if clock == "cpu" {
        assert_unharmed("cpu contention", &o, &alone);
        assert_eq!(o.figure("hostile", "faults"), 0, "the heavy rule never timed out");
        assert_eq!(o.figure("hostile", "skipped"), 0, "nor was throttled");
    }
}

use std::os::unix::process::CommandExt;
