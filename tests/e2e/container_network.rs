//! What Docker says of a container's network reaches rules: its network
//! mode, networks (address, prefix, MAC, gateway), published ports and
//! whether it runs as root, refreshed when it is connected to another
//! network; and `docker cp` into and out of it become `container-copy-in`
//! and `-out` events. dockerd runs in a network namespace of its own, so
//! the networks made here never touch the host's.

use std::time::Duration;

use vigil_engine::event::{Event, EventKind, Network, Port};

use crate::require_root;
use crate::streaming::Streaming;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The container's `/bin/busybox true MARKER` (not the host's `docker`
/// command that names the marker too).
fn exec_with(marker: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| {
        e.kind == EventKind::ProcessExec
            && e.process.as_ref().is_some_and(|p| p.argv == ["/bin/busybox", "true", marker])
    }
}

#[test]
fn networks_ports_and_copies_are_described_from_docker() {
    require_root!();
    let rt = RuntimeDaemon::docker_in_own_netns();
    let kinds = ["--kind", "process-exec", "--kind", "container-copy-in", "--kind", "container-copy-out"];
    let events = Streaming::start(Some(&rt), &[&["events", "--source", "ebpf"][..], &kinds].concat());
    let pid = std::process::id();
    let name = format!("vigil-e2e-net-{pid}");
    rt.cli(&["network", "create", "--subnet", "10.213.0.0/24", "--gateway", "10.213.0.1", "front"]);
    rt.cli(&["network", "create", "--subnet", "10.214.0.0/24", "--gateway", "10.214.0.1", "back"]);
    let (first, second) = (format!("net-first-{pid}"), format!("net-second-{pid}"));
    let id = rt.cli(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "front",
        "--ip",
        "10.213.0.9",
        "-p",
        "127.0.0.1:18080:80/tcp",
        "-u",
        "1000",
        rt.image(),
        "/bin/sh",
        "-c",
        &format!("sleep 0.3; /bin/busybox true {first}; sleep 30"),
    ]);
    let before = events.event(WAIT, exec_with(&first));
    rt.cli(&["network", "connect", "back", &name]);
    // The watcher sees the connect in its own time: exec until an exec
    // shows it.
    let mut after = None;
    for i in 0..20 {
        let marker = format!("{second}-{i}");
        rt.cli(&["exec", &name, "/bin/busybox", "true", &marker]);
        after = events.event(WAIT, exec_with(&marker));
        if after.as_ref().and_then(|e| e.container.as_ref()).is_some_and(|c| c.networks.len() == 2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    rt.cli(&["cp", &file.path().to_string_lossy(), &format!("{name}:/copied-in")]);
    let copy_in = events.event(WAIT, |e| e.kind == EventKind::ContainerCopyIn);
    let out = tempfile::tempdir().unwrap();
    rt.cli(&["cp", &format!("{name}:/bin/busybox"), &out.path().join("bb").to_string_lossy()]);
    let copy_out = events.event(WAIT, |e| e.kind == EventKind::ContainerCopyOut);
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();

    let e = before.unwrap_or_else(|| panic!("the container's first exec\n{log}"));
    let c = e.container.as_ref().unwrap_or_else(|| panic!("in its container: {e:?}"));
    assert_eq!(c.id, id);
    assert_eq!(c.network_mode, "front");
    assert_eq!(c.networks.len(), 1, "{:?}", c.networks);
    let n = &c.networks[0];
    assert_eq!(
        (n.name.as_str(), n.ip.as_str(), n.prefix_len, n.gateway.as_str()),
        ("front", "10.213.0.9", 24, "10.213.0.1")
    );
    assert_eq!(n.mac.len(), 17, "a MAC address: {n:?}");
    assert_eq!(
        c.ports,
        [Port { container_port: 80, protocol: "tcp".into(), host_ip: "127.0.0.1".into(), host_port: 18080 }]
    );
    assert_eq!(c.runs_as_root, Some(false), "-u 1000");

    let e = after.unwrap_or_else(|| panic!("the exec after the connect\n{log}"));
    let names: Vec<&str> = e.container.as_ref().unwrap().networks.iter().map(|n: &Network| n.name.as_str()).collect();
    assert_eq!(names, ["back", "front"], "refreshed on connect");

    for (what, e) in [("copy-in", copy_in), ("copy-out", copy_out)] {
        let e = e.unwrap_or_else(|| panic!("the {what} event\n{log}"));
        let c = e.container.as_ref().unwrap_or_else(|| panic!("{what} carries its container: {e:?}"));
        assert_eq!((c.id.as_str(), c.name.as_str()), (id.as_str(), name.as_str()));
    }
}
