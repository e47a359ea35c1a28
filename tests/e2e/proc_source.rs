//! The proc connector source, as root: a real exec is seen with its argv,
//! exe, uid, parent and ancestry; and the daemon, run as a process, alerts
//! on a real exec and stops cleanly on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use vigil_engine::config::{SourceConfig, SourceKind};
use vigil_engine::daemon::open_source;
use vigil_engine::enrich::Enricher;
use vigil_engine::event::EventKind;
use vigil_engine::pipeline::spawn_source;
use vigil_engine::sources::{Interest, Stop};

use crate::require_root;
use crate::support::*;

fn marker() -> String {
    format!("vigil-marker-{}-{}", std::process::id(), vigil_engine::time::now_ns() % 1_000_000_000)
}

#[test]
fn proc_source_sees_a_real_exec() {
    require_root!();
    let config = SourceConfig { kind: SourceKind::Proc, ..Default::default() };
    let telemetry = vigil_engine::metrics::Telemetry::new();
    let source =
        open_source(&config, || Enricher::new(&config.ebpf), &telemetry).expect("proc connector opens as root");
    let stop = Stop::new();
    let running = spawn_source(source, 1024, stop.clone(), Interest::all()).unwrap();
    let (rx, thread) = (running.events, running.thread);
    std::thread::sleep(Duration::from_millis(100));

    let mark = marker();
    // `sleep; true` keeps sh alive (and its argv readable) while we look.
    let mut child = ChildGuard::spawn({
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "sleep 1; true", &mark]);
        c
    });
    let child_pid = child.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(100)) {
            found = batch.into_iter().find(|e| {
                e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.argv.contains(&mark))
            });
        }
    }
    stop.stop();
    let _ = child.child().wait();
    drop(rx);
    thread.join().unwrap().unwrap();

    let e = found.expect("the marker exec was seen");
    let p = e.process.unwrap();
    assert_eq!(p.tgid, child_pid);
    assert_eq!(p.argv, ["/bin/sh", "-c", "sleep 1; true", mark.as_str()]);
    assert!(p.exe.ends_with("sh") || p.exe.ends_with("dash") || p.exe.ends_with("bash"), "{}", p.exe);
    assert_eq!(p.uid, 0);
    assert_eq!(p.ppid, std::process::id(), "parent is this test process");
    assert_eq!(p.ancestry.first().map(|a| a.pid), Some(std::process::id()));
    assert!(p.namespaces.pid != 0 && p.namespaces.mnt != 0);
    assert!(e.time_ns > 0);
    if vigil_engine::proc::cgroup2_mount().is_some() {
        assert!(p.cgroup_id != 0, "cgroup v2 id resolved");
    }
}

#[test]
fn daemon_alerts_on_a_real_exec_and_stops_on_sigterm() {
    require_root!();
    let daemon = Daemon::start("proc");
    let mark = marker();
    let mut miner = Command::new("/bin/sh");
    miner.args(["-c", "sleep 1; true", &mark, "-o", "stratum+tcp://pool.invalid:3333"]);
    let mut miner = ChildGuard::spawn(miner);
    let alert = daemon.line_with(&mark, Duration::from_secs(10));
    let _ = miner.child().wait();
    let (status, log) = daemon.stop();

    assert_miner_alert(alert, miner.pid());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert!(log.contains("pipeline finished"), "{log}");
}
