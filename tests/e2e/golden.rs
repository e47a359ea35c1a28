//! Replay fixtures through the bundled rules and compare the alerts with
//! golden files (`VIGIL_BLESS=1` rewrites them). Fields that differ per run
//! (`id`, `hostname`) are blanked before comparing.

use std::process::Stdio;

use crate::support::*;

fn normalized(stdout: &str) -> String {
    let mut out = String::new();
    for line in stdout.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["id"] = "<id>".into();
        v["hostname"] = "<host>".into();
        out.push_str(&serde_json::to_string(&v).unwrap());
        out.push('\n');
    }
    out
}

fn check(fixture_name: &str, golden_name: &str) {
    check_with(fixture_name, &bundled_rules_dir(), golden_name)
}

fn check_with(fixture_name: &str, rules: &std::path::Path, golden_name: &str) {
    let out = vigil()
        .arg("replay")
        .arg(fixture(fixture_name))
        .arg("--rules")
        .arg(rules)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = normalized(&String::from_utf8_lossy(&out.stdout));
    let golden = workspace().join("tests/golden").join(golden_name);
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    if got != want {
        let diff: Vec<String> = got
            .lines()
            .zip(want.lines().chain(std::iter::repeat("<missing>")))
            .filter(|(g, w)| g != w)
            .take(3)
            .map(|(g, w)| format!("  got:  {g}\n  want: {w}"))
            .collect();
        panic!(
            "alerts differ from {} ({} lines vs {}); if the change is intended, rerun with VIGIL_BLESS=1\n{}",
            golden.display(),
            got.lines().count(),
            want.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn bundled_rules_match_golden_alerts() {
    check("bundled.jsonl", "bundled.jsonl");
}

#[test]
fn sigma_rules_match_golden_alerts() {
    // The benchmark's 120 Sigma rules (written for Vigil) over the same fixture.
    let dir = rule_dir(&["declarative"]);
    std::fs::copy(workspace().join("engine/benches/rule-files/sigma-120.yaml"), dir.path().join("sigma-120.yaml"))
        .unwrap();
    check_with("bundled.jsonl", dir.path(), "sigma.jsonl");
}

#[test]
fn every_bundled_rule_fires_on_the_fixture() {
    let out = vigil()
        .arg("replay")
        .arg(fixture("bundled.jsonl"))
        .arg("--rules")
        .arg(bundled_rules_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for entry in std::fs::read_dir(bundled_rules_dir()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        // Rule files and their interpreter alert under their rules' own names.
        let Some(name) = file.strip_suffix(".wasm").filter(|n| *n != "declarative") else { continue };
        assert!(text.contains(&format!("\"rule\":\"{name}\"")), "no alert from {name}");
    }
    // Alerts carry the context the issue asks for.
    let shell: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["rule"] == "Shell Started By Application In Container")
        .expect("the rule files alerted on the fixture's shell in a container");
    let f = &shell["output_fields"];
    for key in
        ["proc.cmdline", "user.uid", "container.id", "container.name", "container.image", "k8s.pod.name", "k8s.ns.name"]
    {
        assert!(!f[key].is_null(), "shell alert has {key}: {f}");
    }
    assert!(shell["tags"].as_array().unwrap().iter().any(|t| t.as_str().unwrap().starts_with('T')), "MITRE tag");
}
