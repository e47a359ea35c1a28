//! `vigil events` and `vigil record` run the daemon's own wiring without
//! rules: their events carry the container's name, image and labels as
//! rules see them (the runtime watchers run), with the eBPF source and with
//! the proc connector, and a recording replays with them. As root, with a
//! private Docker.

use std::time::Duration;

use vigil_engine::event::{Event, EventKind};

use crate::require_root;
use crate::streaming::Streaming;
use crate::support::*;

/// A container that runs `marker` as an argument of `/bin/sh -c`, then sleeps.
/// The script does more after `sleep`, so the shell does not exec `sleep` in
/// its place: the proc connector, which reads argv from /proc after the
/// event, would otherwise find `sleep`'s argv there.
fn run_marked(rt: &RuntimeDaemon, name: &str, marker: &str) -> String {
    rt.cli(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--label",
        "team=payments",
        "vigil-busybox:test",
        "/bin/sh",
        "-c",
        "sleep 20; true",
        marker,
    ])
}

/// The exec of the container's entrypoint, by its marker argument.
fn entrypoint(marker: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e: &Event| {
        e.kind == EventKind::ProcessExec
            && e.process.as_ref().is_some_and(|p| p.argv.first().is_some_and(|a| a == "/bin/sh"))
            && e.process.as_ref().is_some_and(|p| p.argv.iter().any(|a| a == marker))
    }
}

fn assert_described(e: &Event, id: &str, name: &str, rt: &RuntimeDaemon) {
    let c = e.container.as_ref().unwrap_or_else(|| panic!("no container: {e:?}"));
    assert_eq!(c.id, id);
    assert_eq!((c.name.as_str(), c.image.as_str()), (name, rt.image()), "described as rules see it: {c:?}");
    assert!(c.labels.contains(&("team".to_string(), "payments".to_string())), "{:?}", c.labels);
    assert!(!c.labels.iter().any(|(k, _)| k == "vigil.unresolved"), "not released undescribed: {:?}", c.labels);
}

fn events_show_the_container(source: &str) {
    let rt = RuntimeDaemon::docker();
    let events = Streaming::start(Some(&rt), &["events", "--source", source, "--kind", "process-exec"]);
    let marker = format!("vigil-events-{source}-{}", std::process::id());
    let name = format!("vigil-e2e-events-{source}-{}", std::process::id());
    let id = run_marked(&rt, &name, &marker);
    let seen = events.event(Duration::from_secs(20), entrypoint(&marker));
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();
    let e = seen.unwrap_or_else(|| panic!("the container's entrypoint exec was printed\n{log}"));
    assert_described(&e, &id, &name, &rt);
}

#[test]
fn vigil_events_with_the_ebpf_source_shows_the_container_as_rules_see_it() {
    require_root!();
    events_show_the_container("ebpf");
}

#[test]
fn vigil_events_with_the_proc_connector_shows_the_container_as_rules_see_it() {
    require_root!();
    events_show_the_container("proc");
}

#[test]
fn a_vigil_record_replays_with_the_containers_description() {
    require_root!();
    let rt = RuntimeDaemon::docker();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    let recording = Streaming::start(Some(&rt), &["record", "--source", "ebpf", "--out", &file_arg]);
    let marker = format!("vigil-record-{}", std::process::id());
    let name = format!("vigil-e2e-record-{}", std::process::id());
    let id = run_marked(&rt, &name, &marker);
    // Its entrypoint ran when `run -d` returned; time for the watcher to describe it.
    std::thread::sleep(Duration::from_secs(3));
    rt.cli(&["rm", "-f", &name]);
    recording.stop();

    // Replayed: `vigil events --replay` prints what rules would get from it.
    let out = vigil().args(["events", "--replay", &file_arg, "--kind", "process-exec"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: Vec<Event> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let e = replayed.iter().find(|e| entrypoint(&marker)(e)).expect("the entrypoint exec was recorded");
    assert_described(e, &id, &name, &rt);
}
