//! Falco dialect: operators, transformers, fields, lists, macros, append and
//! override, exceptions, enabled switches, unsupported rules, output.

use vigil_rulelang::testing::{ancestor, exec, fired, in_container, load, with_parents};
use vigil_rulelang::{RuleSet, SourceFile, Status};

fn rule(cond: &str) -> String {
    format!(
        "- rule: R\n  desc: d\n  condition: {}\n  output: o\n  priority: WARNING\n",
        serde_json::to_string(cond).unwrap()
    )
}

fn fires(cond: &str, event: &vigil_event::Event) -> bool {
    let text = rule(cond);
    let set = load(&[("r.yaml", &text)]);
    assert_eq!(set.rules().len(), 1, "rule did not load: {cond}");
    !fired(&set, event).is_empty()
}

#[test]
fn operators() {
    let e = exec("/usr/bin/curl", &["curl", "-sSL", "http://Example.test/x.sh"]);
    let yes = [
        "proc.name = curl",
        "proc.name == curl",
        "proc.name != wget",
        "proc.cmdline contains Example.test",
        "proc.cmdline icontains EXAMPLE.TEST",
        "proc.cmdline bcontains 2d73534c",
        "proc.exepath startswith /usr/",
        "proc.exepath bstartswith 2f757372",
        "proc.exepath endswith /curl",
        "proc.exepath glob /usr/*/cu?l",
        "proc.exepath iglob /USR/*",
        "proc.exepath pmatch (/usr/bin, /opt)",
        "proc.exepath pmatch (/usr/bin/)",
        "proc.name in (wget, curl)",
        "proc.pid = 4242",
        "proc.pid > 100 and proc.pid >= 4242 and proc.pid < 5000 and proc.pid <= 4242",
        "user.uid = 0",
        "proc.cmdline regex 'curl .*https?://[A-Za-z.]+/x.sh'",
        "not proc.cmdline regex 'https?://'",
        "proc.name exists",
        "proc.args = \"-sSL http://Example.test/x.sh\"",
        "proc.exe = curl",
        "proc.cmdline startswith \"curl -sSL\"",
        "evt.type in (execve, execveat) and evt.dir = <",
        "proc.pname = bash and proc.aname[2] = init and proc.aname = init",
        "proc.apid[1] = 4000 and proc.aexepath[1] = /bin/bash",
        "proc.pexepath = /bin/bash and proc.pcmdline = bash",
        "container.id = host and container.name = host",
        "not container.image exists",
        "proc.pid != val(proc.ppid)",
    ];
    for c in yes {
        assert!(fires(c, &e), "should fire: {c}");
    }
    let no = [
        "proc.name = wget",
        "proc.name != curl",
        "proc.cmdline contains EXAMPLE",
        "proc.exepath pmatch (/usr/b)",
        "proc.exepath glob /bin/*",
        "proc.name in (wget, nc)",
        "proc.pid < 100",
        "proc.aname[3] = init",
        "k8s.pod.name exists",
        "k8s.ns.name != x",
        "evt.type = clone",
        "proc.pid = val(proc.ppid)",
    ];
    for c in no {
        assert!(!fires(c, &e), "should not fire: {c}");
    }
}

#[test]
fn transformers() {
    let e = exec("/usr/bin/Curl", &["Curl", "aGVsbG8="]);
    for c in [
        "tolower(proc.name) = curl",
        "toupper(proc.name) = CURL",
        "basename(proc.exepath) = Curl",
        "len(proc.name) = 4",
        "len(proc.args) > 3",
        "b64(proc.args) = hello",
        "tolower(basename(proc.exepath)) in (curl, wget)",
    ] {
        assert!(fires(c, &e), "should fire: {c}");
    }
}

#[test]
fn container_and_pod_fields() {
    let e = in_container(
        exec("/bin/sh", &["sh", "-i"]),
        "web-1",
        "registry.local:5000/shop/web:1.4.2",
        Some(("web-7d9f", "shop")),
    );
    for c in [
        "container.id != host and container.id = 3f2a9c1d7e8b",
        "container.name = web-1",
        "container.image = registry.local:5000/shop/web:1.4.2",
        "container.image.repository = registry.local:5000/shop/web",
        "container.image.tag = 1.4.2",
        "container.type = docker",
        "container.privileged = false",
        "container.label[app] = web-1",
        "k8s.pod.name = web-7d9f and k8s.ns.name = shop and k8s.pod.uid = uid-1",
        "k8s.pod.label[app] = web-7d9f",
        "k8s.pod.labels intersects (app:web-7d9f, x:y)",
    ] {
        assert!(fires(c, &e), "should fire: {c}");
    }
}

#[test]
fn lists_macros_and_files_refer_to_each_other() {
    let base = r#"
- list: shells
  items: [sh, bash]
- list: more_shells
  items: [shells, zsh]
- macro: spawned_process
  condition: evt.type in (execve, execveat) and evt.dir=<
- macro: shell_procs
  condition: proc.name in (more_shells)
- rule: Shell
  desc: a shell
  condition: spawned_process and shell_procs and not trusted
  output: "shell %proc.name by %proc.pname (%proc.aname[2] %container.label[app] %fd.name)"
  priority: notice
  tags: [shell, T1059]
- macro: trusted
  condition: (proc.pname = sshd)
"#;
    let local = r#"
- list: shells
  items: [ksh]
  append: true
- macro: trusted
  condition: or proc.pname = cron
  override:
    condition: append
"#;
    let set = load(&[("00-base.yaml", base), ("50-local.yaml", local)]);
    assert_eq!(fired(&set, &exec("/bin/ksh", &["ksh"])), vec!["Shell"]);
    assert_eq!(fired(&set, &exec("/bin/zsh", &["zsh"])), vec!["Shell"]);
    let by_cron = with_parents(exec("/bin/sh", &["sh"]), vec![ancestor(9, "/usr/sbin/cron", &["cron"])]);
    assert!(fired(&set, &by_cron).is_empty());
    let m = &set.matches(view(&exec("/bin/bash", &["bash"]), &mut Vec::new()))[0];
    assert_eq!(m.message, "shell bash by bash (init <NA> <NA>)");
    assert_eq!(m.priority, vigil_event::Priority::Notice);
    assert_eq!(m.tags, ["shell", "T1059"]);
    assert!(m.fields.iter().any(|(k, v)| k == "proc.aname[2]" && v == "init"));
}

fn view<'b>(event: &vigil_event::Event, buf: &'b mut Vec<u8>) -> vigil_event::packed::EventView<'b> {
    vigil_event::packed::encode_batch([event], buf);
    let batch = vigil_event::packed::BatchView::new(buf).unwrap();
    batch.get(0).unwrap()
}

#[test]
fn append_override_enabled_and_replacement() {
    let base = r#"
- rule: A
  desc: a
  condition: evt.type=execve and proc.name=nc
  output: nc
  priority: WARNING
  tags: [net]
- rule: B
  desc: b
  condition: evt.type=execve and proc.name=socat
  output: socat
  priority: WARNING
  enabled: false
- rule: C
  desc: c
  condition: evt.type=execve and proc.name=ncat
  output: ncat
  priority: WARNING
"#;
    let local = r#"
- rule: A
  condition: and not proc.args contains localhost
  append: true
- rule: B
  enabled: true
- rule: C
  priority: CRITICAL
  output: "ncat! %proc.cmdline"
  tags: [extra]
  override:
    priority: replace
    output: replace
    tags: append
"#;
    let set = load(&[("a.yaml", base), ("b.yaml", local)]);
    assert_eq!(fired(&set, &exec("/bin/nc", &["nc", "x"])), vec!["A"]);
    assert!(fired(&set, &exec("/bin/nc", &["nc", "localhost"])).is_empty());
    assert_eq!(fired(&set, &exec("/bin/socat", &["socat"])), vec!["B"]);
    let c = set.matches(view(&exec("/bin/ncat", &["ncat", "-l"]), &mut Vec::new()));
    assert_eq!(c[0].priority, vigil_event::Priority::Critical);
    assert_eq!(c[0].message, "ncat! ncat -l");
    assert_eq!(c[0].tags, ["extra".to_string()]);
}

#[test]
fn exceptions_in_both_forms() {
    let text = r#"
- list: allowed_images
  items: [backup, "ops/tools"]
- rule: Read shadow
  desc: d
  condition: evt.type=execve and proc.cmdline contains /etc/shadow
  output: o
  priority: ERROR
  exceptions:
    - name: by_tool
      fields: [proc.name, proc.pname]
      comps: [=, in]
      values:
        - [cat, [cron, anacron]]
        - [grep, [sshd]]
    - name: by_image
      fields: container.image.repository
      values: [allowed_images]
"#;
    let set = load(&[("x.yaml", text)]);
    let by = |name: &str, parent: &str| {
        with_parents(exec(&format!("/bin/{name}"), &[name, "/etc/shadow"]), vec![ancestor(9, parent, &[parent])])
    };
    assert_eq!(fired(&set, &by("cat", "/bin/bash")), vec!["Read shadow"]);
    assert!(fired(&set, &by("cat", "/usr/sbin/cron")).is_empty());
    assert!(fired(&set, &by("grep", "/usr/sbin/sshd")).is_empty());
    assert_eq!(fired(&set, &by("grep", "/usr/sbin/cron")), vec!["Read shadow"]);
    let in_backup = in_container(by("cat", "/bin/sh"), "b", "backup:1", None);
    assert!(fired(&set, &in_backup).is_empty());
    let in_ops = in_container(by("cat", "/bin/sh"), "b", "ops/tools", None);
    assert!(fired(&set, &in_ops).is_empty());
    let elsewhere = in_container(by("cat", "/bin/sh"), "b", "web:1", None);
    assert_eq!(fired(&set, &elsewhere), vec!["Read shadow"]);
}

#[test]
fn what_cannot_run_is_reported_per_rule_and_the_rest_loads() {
    let text = r#"
- required_engine_version: 0.31.0
- macro: open_write
  condition: evt.type in (open, openat) and fd.typechar='f'
- rule: Write below etc
  desc: d
  condition: open_write and fd.name startswith /etc
  output: o
  priority: ERROR
- rule: Terminal shell
  desc: d
  condition: evt.type=execve and proc.tty != 0
  output: o
  priority: NOTICE
- rule: K8s audit
  desc: d
  condition: ka.verb=create
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: Broken
  desc: d
  condition: evt.type=execve and (proc.name=x
  output: o
  priority: NOTICE
- rule: Undefined macro
  desc: d
  condition: evt.type=execve and nope
  output: o
  priority: NOTICE
- rule: Connect
  desc: d
  condition: evt.type=connect and proc.name=nc
  output: o
  priority: NOTICE
- rule: Off
  desc: d
  condition: evt.type=execve and proc.name=x
  output: o
  priority: NOTICE
  enabled: false
- rule: Good
  desc: d
  condition: evt.type=execve and proc.name=nc
  output: o
  priority: NOTICE
- this is not an entry
"#;
    let (set, report) = RuleSet::load(&[SourceFile::new("f.yaml", text)]);
    let f = &report.files[0];
    assert!(f.error.is_none());
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    let status = |n: &str| f.rules.iter().find(|r| r.name == n).unwrap().clone();
    assert_eq!(status("Good").status, Status::Loaded);
    assert_eq!(status("Good").kinds, vec!["process-exec"]);
    assert_eq!(status("Terminal shell").status, Status::Loaded);
    assert_eq!(status("Off").status, Status::Disabled);
    for (n, why) in [("Write below etc", "file and socket"), ("K8s audit", "k8s_audit"), ("Connect", "event types")] {
        let r = status(n);
        assert_eq!(r.status, Status::Unsupported, "{n}");
        assert!(r.reason.as_deref().unwrap().contains(why), "{n}: {:?}", r.reason);
    }
    assert_eq!(status("Broken").status, Status::Invalid);
    assert!(status("Undefined macro").reason.unwrap().contains("undefined macro nope"));
    assert_eq!(set.rules().len(), 2);
    assert_eq!(fired(&set, &exec("/bin/nc", &["nc"])), vec!["Good"]);
    let mut on_a_terminal = exec("/bin/bash", &["bash"]);
    on_a_terminal.process.as_mut().unwrap().tty = Some(vigil_event::Tty::of(136, 0, true));
    assert_eq!(fired(&set, &on_a_terminal), vec!["Terminal shell"]);
}

#[test]
fn a_rule_without_an_event_type_runs_on_every_process_event() {
    let (_, report) = RuleSet::load(&[SourceFile::new("f.yaml", rule("proc.name = nc"))]);
    assert_eq!(report.files[0].rules[0].kinds, vec!["process-exec", "process-fork", "process-exit"]);
    let (_, report) = RuleSet::load(&[SourceFile::new("f.yaml", rule("evt.type = procexit"))]);
    assert_eq!(report.files[0].rules[0].kinds, vec!["process-exit"]);
    let (_, report) = RuleSet::load(&[SourceFile::new("f.yaml", rule("not evt.type in (clone, procexit)"))]);
    assert_eq!(report.files[0].rules[0].kinds, vec!["process-exec"]);
}

#[test]
fn files_that_are_not_rules_say_so() {
    let (_, report) = RuleSet::load(&[
        SourceFile::new("a.yaml", "key: [unclosed"),
        SourceFile::new("b.yaml", "just: a mapping"),
        SourceFile::new("c.yaml", ""),
    ]);
    assert!(report.files[0].error.as_deref().unwrap().contains("not valid YAML"));
    assert!(report.files[1].error.as_deref().unwrap().contains("neither"));
    assert!(report.files[2].error.is_none());
}

mod no_input_panics {
    use proptest::prelude::*;
    use vigil_rulelang::falco::condition::parse;
    use vigil_rulelang::{RuleSet, SourceFile};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn conditions(text in "[a-z._ ()=!<>,\"'\\[\\]0-9-]{0,80}") {
            let _ = parse(&text);
            let file = format!("- rule: r\n  condition: {}\n  output: o\n  priority: info\n", serde_json::to_string(&text).unwrap());
            let _ = RuleSet::load(&[SourceFile::new("r.yaml", file)]);
        }

        #[test]
        fn files(text in "(- |  |rule: |macro: |list: |items: |condition: |append: true|override:|\n|[a-z=() ]{0,10}|detection:|logsource:|---|\\[|\\]){0,40}") {
            let _ = RuleSet::load(&[SourceFile::new("r.yaml", text)]);
        }
    }
}

#[test]
fn hostile_or_odd_rule_text_is_refused_per_rule_without_panicking() {
    // Non-ASCII "hex", a macro that doubles at every level, val() with a
    // transformer, an exception with no fields: each rule is invalid, alone.
    let mut text = String::from("- macro: m0\n  condition: proc.name=a\n");
    for i in 1..=40 {
        text.push_str(&format!("- macro: m{i}\n  condition: m{} or m{}\n", i - 1, i - 1));
    }
    text.push_str(
        r#"
- rule: Bomb
  desc: d
  condition: evt.type=execve and m40
  output: o
  priority: info
- rule: Bad hex
  desc: d
  condition: evt.type=execve and proc.cmdline bcontains "aéb"
  output: o
  priority: info
- rule: Transformed val
  desc: d
  condition: evt.type=execve and tolower(proc.name) = val(tolower(proc.pname))
  output: o
  priority: info
- rule: No fields
  desc: d
  condition: evt.type=execve
  output: o
  priority: info
  exceptions:
    - name: e
      fields: []
      values: [[]]
- rule: Val on the event type
  desc: d
  condition: evt.type != val(proc.name) and proc.name = bash
  output: o
  priority: info
"#,
    );
    let started = std::time::Instant::now();
    let (set, report) = RuleSet::load(&[SourceFile::new("x.yaml", text)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded work");
    let status = |n: &str| report.files[0].rules.iter().find(|r| r.name == n).unwrap().clone();
    for n in ["Bomb", "Bad hex", "Transformed val", "No fields"] {
        assert_eq!(status(n).status, Status::Invalid, "{n}: {:?}", status(n));
    }
    assert!(status("Bomb").reason.unwrap().contains("expands to more than"));
    assert_eq!(status("Val on the event type").status, Status::Loaded);
    assert_eq!(fired(&set, &exec("/bin/bash", &["bash"])), vec!["Val on the event type"]);
}

#[test]
fn a_falco_file_of_several_documents_loads_them_in_order() {
    let text = "- list: l\n  items: [nc]\n---\n- rule: R\n  desc: d\n  condition: evt.type=execve and proc.name in (l)\n  output: o\n  priority: info\n";
    let set = load(&[("multi.yaml", text)]);
    assert_eq!(fired(&set, &exec("/bin/nc", &["nc"])), vec!["R"]);
}

#[test]
fn any_ancestor_fields_hold_when_one_ancestor_satisfies_the_operator() {
    let e = exec("/bin/sh", &["sh"]); // ancestors: bash, init
    assert!(fires("proc.aname != bash", &e), "init is not bash");
    assert!(fires("proc.aname = init", &e));
    assert!(!fires("proc.aname = sshd", &e));
    assert!(fires("proc.apid != 1", &e));
}
