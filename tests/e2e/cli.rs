//! The `vigil` binary: clear errors on bad input, and bad input never stops
//! the good work around it.

use std::process::Stdio;

use crate::support::*;

fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_explains_every_command() {
    let (code, out, _) = output(vigil().arg("--help"));
    assert_eq!(code, 0);
    for cmd in ["run", "replay", "events", "record", "rules"] {
        assert!(out.contains(cmd), "--help mentions {cmd}: {out}");
    }
    let (code, out, _) = output(vigil().args(["run", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--rules") && out.contains("--source") && out.contains("SIGHUP"), "{out}");
}

#[test]
fn rules_check_prints_metadata_and_rejects_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let good = std::fs::read(rule_wasm("shell-in-container")).unwrap();
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();

    let (code, out, _) = output(vigil().args(["rules", "check"]).arg(rule_wasm("shell-in-container")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("id:            shell-in-container") && out.contains("subscriptions: process-exec"), "{out}");
    assert!(out.contains("vigil:rules/host@0.2.2: provided"), "{out}");
    // Example and bundled rules build for wasm32-unknown-unknown: no WASI imports at all.
    assert!(!out.contains("wasi:"), "a rule built without WASI imports none: {out}");
    // A test rule, built for wasm32-wasip2 as rule authors start, imports the WASI its std uses.
    let (code, out, _) = output(vigil().args(["rules", "check"]).arg(rule_wasm("echo")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("wasi:cli/environment@0.2.6: provided (empty)"), "an empty environment: {out}");
    assert!(out.contains("wasi:cli/stdout@0.2.6: denied (traps if called)"), "ungranted WASI is denied: {out}");

    for (file, expect) in [
        (&garbage, "not a WebAssembly binary"),
        (&core_module, "not a valid WebAssembly component"),
        (&truncated, "not a valid WebAssembly component"),
    ] {
        let (code, out, _) = output(vigil().args(["rules", "check", "--json"]).arg(file));
        assert_eq!(code, 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v["status"].as_str().unwrap().contains(expect), "{file:?}: {v}");
    }
}

#[test]
fn a_malformed_rule_next_to_good_ones_is_reported_and_the_rest_run() {
    let rules = rule_dir(&["shell-in-container"]);
    std::fs::write(rules.path().join("broken.wasm"), b"\0asm\x0d\0\x01\0junk").unwrap();
    let (code, out, err) = output(vigil().arg("replay").arg(fixture("bundled.jsonl")).arg("--rules").arg(rules.path()));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("cannot load rule") && err.contains("broken.wasm"), "{err}");
    assert!(out.lines().any(|l| l.contains("\"rule\":\"shell-in-container\"")), "{out}");
}

#[test]
fn corrupt_replay_file_names_the_offset_and_earlier_events_still_alert() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("rec.msgpack");
    let (code, _, err) =
        output(vigil().args(["record", "--out"]).arg(&recorded).arg("--replay").arg(fixture("bundled.jsonl")));
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&recorded).unwrap();
    std::fs::write(&recorded, &bytes[..bytes.len() - 3]).unwrap();

    let (full_code, full_out, _) =
        output(vigil().arg("replay").arg(fixture("bundled.jsonl")).arg("--rules").arg(bundled_rules_dir()));
    assert_eq!(full_code, 0);
    let (code, out, err) = output(vigil().arg("replay").arg(&recorded).arg("--rules").arg(bundled_rules_dir()));
    assert_eq!(code, 1, "corrupt file exits 1: {err}");
    assert!(err.contains("corrupt at byte offset") && err.contains("truncated"), "{err}");
    // The last event is lost; alerts for all earlier ones were printed.
    assert!(!out.is_empty() && out.lines().count() <= full_out.lines().count());
    assert!(out.lines().count() + 2 >= full_out.lines().count(), "earlier events were processed");
}

#[test]
fn broken_config_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[dispatch]\ncall_timeout = \"fast\"\n").unwrap();
    let (code, _, err) = output(vigil().arg("run").arg("--config").arg(&cfg).arg("--rules").arg(dir.path()));
    assert_eq!(code, 2);
    assert!(err.contains("call_timeout") && err.contains("vigil.toml"), "{err}");
    assert_eq!(err.matches("TOML parse error").count(), 1, "the parser's error is said once: {err}");
    std::fs::write(&cfg, "[dispatch]\nbatch_size = 0\n").unwrap();
    let (code, _, err) = output(vigil().arg("run").arg("--config").arg(&cfg).arg("--rules").arg(dir.path()));
    assert_eq!(code, 2);
    assert!(err.contains("dispatch.batch_size"), "{err}");
}

#[test]
fn file_output_receives_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.json");
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!("[output.stdout]\nenabled = false\n[output.file]\npath = {:?}\nfsync = \"always\"\n", file),
    )
    .unwrap();
    let (code, out, err) = output(
        vigil()
            .arg("replay")
            .arg(fixture("bundled.jsonl"))
            .arg("--rules")
            .arg(bundled_rules_dir())
            .arg("--config")
            .arg(&cfg),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().count() >= 8, "{text}");
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
}

#[test]
fn sighup_rereads_the_config_and_reloads_rules() {
    let rules = rule_dir(&["shell-in-container"]);
    let (alerted, err) = replay_then_disable_by_sighup(rules.path(), true, "shell-in-container");
    assert!(err.contains("SIGHUP") && err.contains("disabled by config") && err.contains("rule removed"), "{err}");
    assert!(alerted.iter().all(|&n| n < 35), "no alerts after the reload took effect: {alerted:?}");
}

#[test]
fn by_default_identical_alerts_fold_and_secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_dir(&["shell-in-container"]);
    let shell = |i: u64, argv: &str| {
        format!(
            r#"{{"kind":"process-exec","time_ns":{},"process":{{"pid":{},"exe":"/bin/bash","argv":{argv}}},"container":{{"id":"c1","name":"web","image":"nginx"}}}}"#,
            1_700_000_000_000_000_000u64 + i * 1_000_000,
            100 + i
        ) + "\n"
    };
    // 40 shells identical but for the pid, then one with a password on its command line.
    let mut lines: String = (0..40).map(|i| shell(i, r#"["bash"]"#)).collect();
    lines.push_str(&shell(40, r#"["bash","-c","mysql --password hunter2 -h db"]"#));
    let replay = dir.path().join("shells.jsonl");
    std::fs::write(&replay, lines).unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, format!("cache_dir = {:?}\n", dir.path().join("cache"))).unwrap();
    let (code, out, err) =
        output(vigil().arg("replay").arg(&replay).arg("--rules").arg(rules.path()).arg("--config").arg(&cfg));
    assert_eq!(code, 0, "{err}");
    let alerts: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The first shell, the password one, and at the end the last folded
    // shell carrying the count of the 38 others.
    assert_eq!(alerts.len(), 3, "{out}");
    assert!(alerts[0]["output_fields"].get("vigil.similar").is_none());
    let secret =
        alerts.iter().find(|a| a["output_fields"]["proc.cmdline"].as_str().unwrap().contains("mysql")).unwrap();
    assert_eq!(secret["output_fields"]["proc.cmdline"], "bash -c mysql --password <redacted> -h db");
    assert!(!out.contains("hunter2"));
    let summary = alerts.iter().find(|a| a["output_fields"].get("vigil.similar").is_some()).expect("a summary");
    assert_eq!(summary["output_fields"]["vigil.similar"], 38);
    assert!(summary["output"].as_str().unwrap().ends_with("(and 38 similar)"));
}

/// `rules.overlay_dirs`: a file in an overlay replaces the base directory's
/// file of the same name; the base's other files still run. A missing
/// overlay is a clear error.
#[test]
fn overlay_dirs_replace_rules_by_file_name() {
    let base = rule_dir(&["crypto-miner", "shell-in-container"]);
    let overlay = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, format!("[rules]\noverlay_dirs = [{:?}]\n", overlay.path())).unwrap();
    let rules_alerting = || {
        let (code, out, err) = output(
            vigil()
                .arg("replay")
                .arg(fixture("bundled.jsonl"))
                .arg("--rules")
                .arg(base.path())
                .arg("--config")
                .arg(&cfg),
        );
        assert_eq!(code, 0, "{err}");
        let mut rules: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rule"].as_str().unwrap().to_string())
            .collect();
        rules.sort();
        rules.dedup();
        rules
    };
    assert_eq!(rules_alerting(), ["crypto-miner", "shell-in-container"], "an empty overlay changes nothing");
    // The overlay's crypto-miner.wasm is another rule: echo, which alerts on every event.
    std::fs::copy(rule_wasm("echo"), overlay.path().join("crypto-miner.wasm")).unwrap();
    assert_eq!(rules_alerting(), ["echo", "shell-in-container"], "the overlay's file replaced the base's");

    std::fs::write(&cfg, "[rules]\noverlay_dirs = [\"/nonexistent/vigil-overlay\"]\n").unwrap();
    let (code, _, err) = output(
        vigil().arg("replay").arg(fixture("bundled.jsonl")).arg("--rules").arg(base.path()).arg("--config").arg(&cfg),
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/vigil-overlay") && err.contains("does not exist"), "{err}");
}
