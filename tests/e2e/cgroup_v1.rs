//! Containers on a cgroup v1 host: dockerd runs in a private mount
//! namespace without the unified hierarchy, so runc puts its containers in
//! the v1 controllers' hierarchies only, and their processes' v2 cgroup is
//! the runtime's own (the host's). Their execs must still carry the
//! container, with the eBPF source (the kernel reads each task's cgroup in
//! a v1 hierarchy) and with the proc connector (/proc/PID/cgroup's v1 lines).

use std::time::Duration;

use vigil_engine::event::{Event, EventKind};

use crate::require_root;
use crate::streaming::Streaming;
use crate::support::*;

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<&'static str> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mounts.lines().any(|l| l.contains(" - cgroup cgroup ")) {
        return Some(
            "this machine mounts no cgroup v1 controller (cgroup v2 only: every controller is bound to the \
             unified hierarchy), so no runtime can put a container in cgroup v1",
        );
    }
    None
}

fn check(source: &str) {
    if let Some(why) = unsupported() {
        skipped(module_path!(), why);
        return;
    }
    let rt = RuntimeDaemon::docker_in_cgroup_v1();
    let kinds = ["--kind", "process-exec", "--kind", "process-exit"];
    let events = Streaming::start(Some(&rt), &[&["events", "--source", source][..], &kinds].concat());
    let pid = std::process::id();
    let (name, marker) = (format!("vigil-e2e-v1-{source}-{pid}"), format!("v1-{source}-{pid}"));
    // The marker runs after a pause, long enough for the proc connector to
    // read it, and again (a busy host can overflow the connector's socket).
    let script = format!("sleep 0.5; for i in 1 2 3 4 5; do /bin/sleep 1 {marker}; done; sleep 30");
    let id = rt.cli(&["run", "-d", "--name", &name, "--network", "none", rt.image(), "/bin/sh", "-c", &script]);
    let target = rt.cli(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", target.trim())).unwrap_or_default();
    let marker = marker.as_str();
    let marked = |kind: EventKind| {
        move |e: &Event| e.kind == kind && e.process.as_ref().is_some_and(|p| p.argv.iter().any(|a| a == marker))
    };
    let e = events.event(Duration::from_secs(20), marked(EventKind::ProcessExec));
    // Its exit: the eBPF source reads the v1 id at exec only; later events
    // take it from the process tree. (The proc connector's exits carry what
    // /proc still shows of a process that is gone: nothing.)
    let exit =
        if source == "ebpf" { events.event(Duration::from_secs(10), marked(EventKind::ProcessExit)) } else { None };
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();

    // The test means something only if v2 alone could not tell.
    let v2 = cgroups.lines().find(|l| l.starts_with("0::")).unwrap_or("0::");
    assert!(!v2.contains(&id), "the container must be in cgroup v1 only: {cgroups}");
    assert!(cgroups.lines().any(|l| !l.starts_with("0::") && l.contains(&id)), "v1 names it: {cgroups}");
    let e = e.unwrap_or_else(|| panic!("the container's exec ran\n{log}"));
    let c = e.container.as_ref().unwrap_or_else(|| panic!("the exec carries its container: {e:?}\n{log}"));
    assert_eq!((c.id.as_str(), c.name.as_str()), (id.as_str(), name.as_str()), "described by Docker");
    if source == "ebpf" {
        let exit = exit.unwrap_or_else(|| panic!("the marker's exit\n{log}"));
        assert_eq!(exit.container.as_ref().map(|c| c.id.as_str()), Some(id.as_str()), "{exit:?}");
    }
}

#[test]
fn the_ebpf_source_resolves_containers_from_a_cgroup_v1_hierarchy() {
    require_root!();
    check("ebpf");
}

#[test]
fn the_proc_connector_resolves_containers_from_cgroup_v1_lines() {
    require_root!();
    check("proc");
}
