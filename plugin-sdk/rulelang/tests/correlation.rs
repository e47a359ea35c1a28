//! Sigma correlation rules: event_count, value_count, temporal and
//! temporal_ordered, per group, within the timespan; silent base rules,
//! aliases, bounded state, and what the load report says about bad ones.

use vigil_event::Event;
use vigil_rulelang::correlation::{MAX_CORRELATIONS, MAX_GROUPS, MAX_TOTAL_ENTRIES, MAX_TOTAL_GROUPS};
use vigil_rulelang::testing::{alerts as fire, exec, in_container, load};
use vigil_rulelang::{CorrelationMatch, CorrelationState, RuleSet, SourceFile, Status};

const SEC: u64 = 1_000_000_000;

/// A Sigma rule document matching execs of `names` (by process name).
fn base(name: &str, names: &[&str]) -> String {
    format!(
        "title: {name} run\nname: {name}\nlogsource:\n  category: process_creation\n  product: linux\n\
         detection:\n  sel:\n    proc.name: [{}]\n  condition: sel\n",
        names.join(", ")
    )
}

/// An exec of `prog` at second `at`, in container `container` (or on the host), by `user`.
fn run(prog: &str, at: u64, container: Option<&str>, user: &str) -> Event {
    let mut e = exec(&format!("/usr/bin/{prog}"), &[prog]);
    e.time_ns += at * SEC;
    e.process.as_mut().unwrap().user = user.into();
    match container {
        Some(name) => {
            let mut e = in_container(e, name, "alpine", None);
            let mut c = (*e.container.take().unwrap()).clone();
            c.id = format!("{name:0<64}");
            e.container = Some(c.into());
            e
        }
        None => e,
    }
}

/// The correlations `e` completes, with their alerts' text.
fn completed<'r>(set: &'r RuleSet, state: &mut CorrelationState, e: &Event) -> Vec<CorrelationMatch<'r>> {
    let mut bytes = Vec::new();
    vigil_event::packed::encode_batch([e], &mut bytes);
    let batch = vigil_event::packed::BatchView::new(&bytes).unwrap();
    let ctx = vigil_rulelang::fields::EventCtx::new(batch.get(0).unwrap());
    let (mut hits, mut done) = (Vec::new(), Vec::new());
    set.matching(&ctx, &mut hits);
    state.observe(set.correlations(), &hits, &ctx, &mut done);
    done
}

const BURST: &str = "title: Discovery burst\nid: 0b7d1f3e-5d39-4b1a-9d7e-1f0c2a3b4c5d\nlevel: high\ncorrelation:\n  \
    type: value_count\n  rules: [discovery]\n  group-by: [container.id]\n  timespan: 60s\n  condition:\n    \
    field: proc.name\n    gte: 3\n";

#[test]
fn value_count_counts_distinct_values_per_group_within_the_timespan() {
    let text = format!("{}---\n{BURST}", base("discovery", &["id", "whoami", "uname", "ps"]));
    let set = load(&[("burst.yml", &text)]);
    assert_eq!(set.correlations().len(), 1);
    let mut st = CorrelationState::default();
    // The base rule is silent: counted, no alert of its own.
    assert!(fire(&set, &mut st, &run("id", 0, Some("a"), "root")).is_empty());
    // The same value again, and another container's: no third distinct value in "a".
    assert!(fire(&set, &mut st, &run("id", 1, Some("a"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("uname", 2, Some("b"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("whoami", 3, Some("a"), "root")).is_empty());
    // Not a discovery command: not counted.
    assert!(fire(&set, &mut st, &run("ls", 4, Some("a"), "root")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("uname", 5, Some("a"), "root")), ["Discovery burst"]);
    // The group started over: the next alert needs three new distinct values.
    assert!(fire(&set, &mut st, &run("ps", 6, Some("a"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("id", 7, Some("a"), "root")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("uname", 8, Some("a"), "root")), ["Discovery burst"]);
    // Spread wider than the timespan: never three within 60 s.
    for (i, prog) in ["id", "whoami", "uname", "ps", "id"].iter().enumerate() {
        assert!(fire(&set, &mut st, &run(prog, 100 + 61 * i as u64, Some("c"), "root")).is_empty(), "{prog}");
    }
}

#[test]
fn the_alert_says_what_was_counted_and_for_which_group() {
    let text = format!("{}---\n{BURST}", base("discovery", &["id", "whoami", "uname"]));
    let set = load(&[("burst.yml", &text)]);
    let mut st = CorrelationState::default();
    for (i, prog) in ["id", "whoami", "uname"].iter().enumerate() {
        if let Some(m) = completed(&set, &mut st, &run(prog, i as u64, Some("web"), "root")).pop() {
            assert_eq!(m.priority, vigil_event::Priority::Error, "level high");
            assert!(
                m.message
                    == "Discovery burst (3 distinct proc.name within 60s: id, whoami, uname; container.id=web000000000)",
                "{}",
                m.message
            );
            assert!(
                m.fields.contains(&("sigma.id".into(), "0b7d1f3e-5d39-4b1a-9d7e-1f0c2a3b4c5d".into())),
                "{:?}",
                m.fields
            );
            assert!(m.fields.contains(&("correlation.count".into(), "3".into())), "{:?}", m.fields);
            assert_eq!(i, 2);
            return;
        }
    }
    panic!("no alert");
}

#[test]
fn event_count_with_generate_keeps_the_base_rules_alerts() {
    let text = format!(
        "{}---\ntitle: Many su\ncorrelation:\n  type: event_count\n  rules: [su]\n  group-by: [User, ComputerName]\n  \
         timespan: 10s\n  condition:\n    gte: 3\n  generate: true\n",
        base("su", &["su"])
    );
    let set = load(&[("su.yml", &text)]);
    let mut st = CorrelationState::default();
    assert_eq!(fire(&set, &mut st, &run("su", 0, None, "alice")), ["su run"]);
    assert_eq!(fire(&set, &mut st, &run("su", 1, None, "bob")), ["su run"]);
    assert_eq!(fire(&set, &mut st, &run("su", 2, None, "alice")), ["su run"]);
    assert_eq!(fire(&set, &mut st, &run("su", 3, None, "alice")), ["su run", "Many su"]);
    // Grouped by user: bob's second su is here, his third 20 s later, past the 10 s window.
    assert_eq!(fire(&set, &mut st, &run("su", 4, None, "bob")), ["su run"]);
    assert_eq!(fire(&set, &mut st, &run("su", 24, None, "bob")), ["su run"]);
}

#[test]
fn temporal_and_temporal_ordered() {
    let rules = format!("{}---\n{}", base("fetch", &["curl", "wget"]), base("chmod", &["chmod"]));
    let corr = |kind: &str| {
        format!(
            "---\ntitle: {kind}\ncorrelation:\n  type: {kind}\n  rules: [fetch, chmod]\n  group-by: [container.id]\n  timespan: 30s\n"
        )
    };
    let set = load(&[("t.yml", &format!("{rules}{}{}", corr("temporal"), corr("temporal_ordered")))]);
    assert_eq!(set.correlations().len(), 2);
    let mut st = CorrelationState::default();
    // In order within 30 s: both.
    assert!(fire(&set, &mut st, &run("curl", 0, Some("x"), "root")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("chmod", 5, Some("x"), "root")), ["temporal", "temporal_ordered"]);
    // The other way round: temporal only.
    assert!(fire(&set, &mut st, &run("chmod", 100, Some("y"), "root")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("wget", 101, Some("y"), "root")), ["temporal"]);
    // Too far apart, or in two containers: neither.
    assert!(fire(&set, &mut st, &run("curl", 200, Some("z"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("chmod", 240, Some("z"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("curl", 300, Some("p"), "root")).is_empty());
    assert!(fire(&set, &mut st, &run("chmod", 301, Some("q"), "root")).is_empty());
}

#[test]
fn aliases_group_different_fields_of_different_rules() {
    // The user who ran `useradd` is the one `su` then switches to... here: the same user name read two ways.
    let text = format!(
        "{}---\n{}---\ntitle: Pair\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  group-by: [who]\n  \
         timespan: 10s\n  aliases:\n    who:\n      a: User\n      b: user.name\n",
        base("a", &["useradd"]),
        base("b", &["su"])
    );
    let set = load(&[("p.yml", &text)]);
    let mut st = CorrelationState::default();
    assert!(fire(&set, &mut st, &run("useradd", 0, None, "eve")).is_empty());
    assert!(fire(&set, &mut st, &run("su", 1, None, "mallory")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("su", 2, None, "eve")), ["Pair"]);
}

#[test]
fn state_stays_bounded_with_many_groups() {
    let text = format!("{}---\n{BURST}", base("discovery", &["id"]));
    let set = load(&[("burst.yml", &text)]);
    let mut st = CorrelationState::default();
    for i in 0..(MAX_GROUPS as u64 + 500) {
        fire(&set, &mut st, &run("id", i / 1000, Some(&format!("c{i}")), "root"));
    }
    assert!(st.len() <= MAX_GROUPS, "{} groups", st.len());
}

#[test]
fn bad_correlations_are_reported_and_the_rest_load() {
    let ok = format!("id: 5e1f0a2b-0000-4000-8000-000000000001\n{}", base("discovery", &["id"]));
    let cases = [
        (
            "refers to no loaded rule",
            "type: event_count\n  rules: [nope]\n  timespan: 1m\n  condition:\n    gte: 2",
            Status::Invalid,
            "refers to \"nope\"",
        ),
        (
            "bad timespan",
            "type: event_count\n  rules: [discovery]\n  timespan: 1w\n  condition:\n    gte: 2",
            Status::Invalid,
            "timespan",
        ),
        (
            "unknown type",
            "type: sometimes\n  rules: [discovery]\n  timespan: 1m",
            Status::Invalid,
            "unknown correlation type",
        ),
        (
            "no field",
            "type: value_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    gte: 2",
            Status::Invalid,
            "field",
        ),
        ("no condition", "type: event_count\n  rules: [discovery]\n  timespan: 1m", Status::Invalid, "condition"),
        (
            "bad count",
            "type: event_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    gte: many",
            Status::Invalid,
            "expected a count",
        ),
        (
            "huge count",
            "type: event_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    gte: 1000000",
            Status::Unsupported,
            "counts above",
        ),
        (
            "unknown field",
            "type: event_count\n  rules: [discovery]\n  group-by: [TargetHost]\n  timespan: 1m\n  condition:\n    gte: 2",
            Status::Unsupported,
            "TargetHost",
        ),
        (
            "chained",
            "type: event_count\n  rules: [other]\n  timespan: 1m\n  condition:\n    gte: 2",
            Status::Unsupported,
            "correlations of correlations",
        ),
        (
            "an upper bound",
            "type: event_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    gte: 2\n    lte: 5",
            Status::Unsupported,
            "end of the window",
        ),
        (
            "exact",
            "type: event_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    eq: 3",
            Status::Unsupported,
            "end of the window",
        ),
        ("twice", "type: temporal\n  rules: [discovery, discovery]\n  timespan: 1m", Status::Invalid, "more than once"),
        (
            "by name and by id",
            "type: temporal\n  rules: [discovery, 5e1f0a2b-0000-4000-8000-000000000001]\n  timespan: 1m",
            Status::Invalid,
            "the same rule twice",
        ),
        (
            "more than there are",
            "type: temporal\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    gte: 2",
            Status::Invalid,
            "never be met",
        ),
        (
            "counting the host",
            "type: value_count\n  rules: [discovery]\n  timespan: 1m\n  condition:\n    field: ComputerName\n    gte: 2",
            Status::Unsupported,
            "names the host",
        ),
        (
            "too many fields",
            "type: temporal\n  rules: [discovery]\n  group-by: [a, b, c, d, e, f, g, h, i]\n  timespan: 1m",
            Status::Invalid,
            "at most 8",
        ),
    ];
    for (what, body, status, reason) in cases {
        let text = format!(
            "{ok}---\ntitle: other\nname: other\ncorrelation:\n  type: event_count\n  rules: [discovery]\n  timespan: 1m\n  \
             condition:\n    gte: 2\n---\ntitle: {what}\ncorrelation:\n  {body}\n"
        );
        let (set, report) = RuleSet::load(&[SourceFile::new("c.yml", text)]);
        let entry =
            report.files[0].rules.iter().find(|r| r.name == what).unwrap_or_else(|| panic!("{what}: {report:?}"));
        assert_eq!(entry.status, status, "{what}: {entry:?}");
        assert!(entry.reason.as_deref().unwrap_or_default().contains(reason), "{what}: {entry:?}");
        // The good correlation and the base rule still load.
        assert_eq!(set.correlations().len(), 1, "{what}");
        assert_eq!(report.count(Status::Loaded), 2, "{what}: {report:?}");
    }
}

#[test]
fn a_correlation_of_an_unsupported_rule_says_why() {
    let text = "title: fim\nname: fim\nlogsource:\n  category: file_event\n  product: linux\ndetection:\n  sel:\n    \
                TargetFilename: /etc/passwd\n  condition: sel\n---\ntitle: many\ncorrelation:\n  type: event_count\n  \
                rules: [fim]\n  timespan: 1m\n  condition:\n    gte: 2\n";
    let (set, report) = RuleSet::load(&[SourceFile::new("c.yml", text)]);
    assert!(set.correlations().is_empty());
    let entry = report.files[0].rules.iter().find(|r| r.name == "many").unwrap();
    assert_eq!(entry.status, Status::Unsupported, "{entry:?}");
    assert!(entry.reason.as_deref().unwrap().contains("does not run: logsource"), "{entry:?}");
}

#[test]
fn the_bundled_discovery_burst() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/declarative/rules");
    let text = std::fs::read_to_string(dir.join("65-discovery-burst.yaml")).unwrap();
    let (set, report) = RuleSet::load(&[SourceFile::new("65-discovery-burst.yaml", text)]);
    assert_eq!(report.count(Status::Loaded), 2, "{report:#?}");
    let counted = &report.files[0].rules[0];
    assert_eq!(counted.reason.as_deref(), Some("counted by a correlation; no alert of its own"), "{counted:?}");
    assert_eq!(report.files[0].rules[1].reason, None);
    let mut st = CorrelationState::default();
    let cmd = |argv: &[&str], at: u64, container: Option<&str>| {
        let mut e = run(argv[0], at, container, "root");
        e.process.as_mut().unwrap().argv = argv.iter().map(|a| a.to_string()).collect();
        e
    };
    let recon: [&[&str]; 6] =
        [&["whoami"], &["id", "-u"], &["ip", "-4", "addr"], &["ip", "route"], &["cat", "/etc/passwd"], &["env"]];
    for (i, argv) in recon.iter().enumerate() {
        // ip counts once: the fifth distinct program is env.
        let want: &[&str] = if i == 5 { &["Discovery Burst In Container"] } else { &[] };
        assert_eq!(fire(&set, &mut st, &cmd(argv, i as u64, Some("web"))), want, "{argv:?}");
    }
    // Four discovery programs, and three look-alikes that do not count: env
    // running a program, cat of another file, ip flushing neighbours.
    for argv in [
        &["whoami"][..],
        &["id"],
        &["uname"],
        &["hostname"],
        &["env", "FOO=1", "node"],
        &["cat", "/etc/hosts"],
        &["ip", "neigh", "flush"],
    ] {
        assert!(fire(&set, &mut st, &cmd(argv, 10, Some("api"))).is_empty(), "{argv:?}");
    }
    assert_eq!(fire(&set, &mut st, &cmd(&["ps", "aux"], 11, Some("api"))), ["Discovery Burst In Container"]);
    // Programs run by their full path count the same.
    let full: [&[&str]; 5] =
        [&["/usr/bin/whoami"], &["/usr/bin/id"], &["/sbin/ip", "addr"], &["/usr/bin/env"], &["/bin/mount"]];
    for (i, argv) in full.iter().enumerate() {
        let mut e = cmd(argv, 30 + i as u64, Some("db"));
        e.process.as_mut().unwrap().comm = argv[0].rsplit('/').next().unwrap().into();
        let want: &[&str] = if i == 4 { &["Discovery Burst In Container"] } else { &[] };
        assert_eq!(fire(&set, &mut st, &e), want, "{argv:?}");
    }
    for (i, argv) in recon.iter().enumerate() {
        assert!(fire(&set, &mut st, &cmd(argv, 20 + i as u64, None)).is_empty(), "on the host: {argv:?}");
    }
}

#[test]
fn many_hostile_correlations_share_one_bounded_budget() {
    // 40 correlations keeping up to 1,001 values per group, grouped by a
    // value every event changes: the state stays within the total budget.
    let mut text = base("any", &["sh"]);
    for i in 0..40 {
        text.push_str(&format!(
            "---\ntitle: c{i}\ncorrelation:\n  type: value_count\n  rules: [any]\n  group-by: [CommandLine]\n  \
             timespan: 30d\n  condition:\n    field: ProcessId\n    gte: 1000\n"
        ));
    }
    let set = load(&[("h.yml", &text)]);
    assert_eq!(set.correlations().len(), 40);
    let mut st = CorrelationState::default();
    for i in 0..3_000u64 {
        let mut e = run("sh", i, Some("x"), "root");
        let p = e.process.as_mut().unwrap();
        p.argv = vec!["sh".into(), "-c".into(), format!("echo {}", i % 700)];
        p.pid = i as u32;
        fire(&set, &mut st, &e);
        assert!(
            st.entries() <= MAX_TOTAL_ENTRIES && st.len() <= MAX_TOTAL_GROUPS,
            "{} entries, {} groups",
            st.entries(),
            st.len()
        );
    }
    assert!(!st.is_empty());
}

#[test]
fn past_the_most_correlations_the_rest_are_reported_not_loaded() {
    let mut text = base("any", &["sh"]);
    for i in 0..MAX_CORRELATIONS + 6 {
        text.push_str(&format!(
            "---\ntitle: c{i}\ncorrelation:\n  type: event_count\n  rules: [any]\n  timespan: 1m\n  condition:\n    gte: 2\n"
        ));
    }
    let (set, report) = RuleSet::load(&[SourceFile::new("many.yml", text)]);
    assert_eq!(set.correlations().len(), MAX_CORRELATIONS);
    assert_eq!(report.count(Status::Unsupported), 6, "{report:#?}");
    let last = report.files[0].rules.last().unwrap();
    assert!(last.reason.as_deref().unwrap().contains("more than 64 correlations"), "{last:?}");
}

#[test]
fn one_event_cannot_take_two_steps_of_an_ordered_chain() {
    // A rule for `sh` and one for `sh` or `bash`: an sh exec matches both.
    let text = format!(
        "{}---\n{}---\ntitle: chain\ncorrelation:\n  type: temporal_ordered\n  rules: [first, then]\n  timespan: 30s\n",
        base("first", &["sh"]),
        base("then", &["sh", "bash"])
    );
    let set = load(&[("o.yml", &text)]);
    let mut st = CorrelationState::default();
    assert!(fire(&set, &mut st, &run("sh", 0, None, "root")).is_empty(), "one event, both rules: not a chain");
    assert_eq!(fire(&set, &mut st, &run("bash", 1, None, "root")), ["chain"], "then the second step");
    // The first step again, then the second after the first aged out: no chain.
    assert!(fire(&set, &mut st, &run("sh", 100, None, "root")).is_empty());
    assert!(fire(&set, &mut st, &run("bash", 140, None, "root")).is_empty());
}

#[test]
fn a_counted_rule_alerts_if_any_correlation_says_generate() {
    let corr = |t: &str, generate: bool| {
        format!(
            "---\ntitle: {t}\ncorrelation:\n  type: event_count\n  rules: [su]\n  timespan: 10s\n  condition:\n    \
             gte: 9\n  generate: {generate}\n"
        )
    };
    let text = format!("{}{}{}", base("su", &["su"]), corr("quiet", false), corr("loud", true));
    let set = load(&[("g.yml", &text)]);
    assert_eq!(fire(&set, &mut CorrelationState::default(), &run("su", 0, None, "a")), ["su run"]);
    // A rule referred to by a correlation that does not load stays silent too.
    let broken = format!(
        "{}---\ntitle: broken\ncorrelation:\n  type: event_count\n  rules: [su]\n  timespan: 1w\n",
        base("su", &["su"])
    );
    let (set, _) = RuleSet::load(&[SourceFile::new("b.yml", broken)]);
    assert!(fire(&set, &mut CorrelationState::default(), &run("su", 0, None, "a")).is_empty());
}

#[test]
fn an_alert_names_a_few_values_and_cuts_long_ones() {
    let text = format!(
        "{}---\ntitle: many\ncorrelation:\n  type: value_count\n  rules: [any]\n  group-by: [CommandLine]\n  \
         timespan: 1h\n  condition:\n    field: ProcessId\n    gte: 50\n",
        base("any", &["sh"])
    );
    let set = load(&[("v.yml", &text)]);
    let long = "x".repeat(4000);
    let mut st = CorrelationState::default();
    let mut done = Vec::new();
    for i in 0..50u32 {
        let mut e = run("sh", i as u64, None, "root");
        let p = e.process.as_mut().unwrap();
        p.argv = vec!["sh".into(), long.clone()];
        (p.pid, p.tgid) = (1000 + i, 1000 + i);
        done.extend(completed(&set, &mut st, &e));
    }
    let m = done.pop().expect("the 50th distinct pid completes");
    assert!(m.message.contains("1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007 and 42 more"), "{}", m.message);
    assert!(m.message.len() < 400, "{} bytes: {}", m.message.len(), m.message);
    assert!(m.fields.iter().all(|(_, v)| v.len() <= 128), "{:?}", m.fields);
}

#[test]
fn entries_from_after_a_clock_step_back_age_too() {
    let text = format!(
        "{}---\ntitle: two\ncorrelation:\n  type: event_count\n  rules: [su]\n  timespan: 60s\n  condition:\n    \
         gte: 2\n",
        base("su", &["su"])
    );
    let set = load(&[("t.yml", &text)]);
    let mut st = CorrelationState::default();
    assert!(fire(&set, &mut st, &run("su", 1000, None, "a")).is_empty());
    // The clock went back 1,000 s: the first su is not within 60 s of this one.
    assert!(fire(&set, &mut st, &run("su", 0, None, "a")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("su", 10, None, "a")), ["two"]);
}

#[test]
fn a_correlation_may_come_first_refer_by_id_and_put_field_beside_the_condition() {
    // As some published files are written: the correlation before its rule,
    // the rule referred to by id, `rules` a single name, `field` at the
    // correlation's level (the specification's first version).
    let text = "title: Many users\ncorrelation:\n  type: value_count\n  rules: 6f3b1c94-2d7e-4a58-9c21-8e4d0b5a7f13\n  \
                field: User\n  group-by:\n    - ComputerName\n  timespan: 5m\n  condition:\n    gt: 1\n---\n\
                title: su run\nid: 6f3b1c94-2d7e-4a58-9c21-8e4d0b5a7f13\nlogsource:\n  category: process_creation\n  \
                product: linux\ndetection:\n  sel:\n    Image|endswith: /su\n  condition: sel\n";
    let (set, report) = RuleSet::load(&[SourceFile::new("m.yml", text)]);
    assert_eq!(report.count(Status::Loaded), 2, "{report:#?}");
    let mut st = CorrelationState::default();
    assert!(fire(&set, &mut st, &run("su", 0, None, "alice")).is_empty());
    assert!(fire(&set, &mut st, &run("su", 1, None, "alice")).is_empty());
    assert_eq!(fire(&set, &mut st, &run("su", 2, None, "bob")), ["Many users"]);
}
