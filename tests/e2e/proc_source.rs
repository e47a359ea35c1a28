//! The proc connector source, as root: a real exec is seen with its argv,
//! exe, uid, parent and ancestry; and the daemon, run as a process, alerts
//! on a real exec and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vigil_engine::config::{SourceConfig, SourceKind};
use vigil_engine::event::EventKind;
use vigil_engine::pipeline::{open_source, spawn_source};
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
    let source = open_source(&config).expect("proc connector opens as root");
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
    if vigil_engine::sources::procfs::cgroup2_mount().is_some() {
        assert!(p.cgroup_id != 0, "cgroup v2 id resolved");
    }
}

#[test]
fn daemon_alerts_on_a_real_exec_and_stops_on_sigterm() {
    require_root!();
    let cache = tempfile::tempdir().unwrap();
    let cfg = cache.path().join("vigil.toml");
    std::fs::write(&cfg, format!("cache_dir = {:?}\n", cache.path().join("cache"))).unwrap();
    let mut cmd = vigil();
    cmd.args(["run", "--source", "proc", "--rules"]).arg(bundled_rules_dir()).arg("--config").arg(&cfg);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(cmd);

    // Wait until it runs.
    let stderr = daemon.child().stderr.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let log_thread = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pipeline running") {
                let _ = ready_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    ready_rx.recv_timeout(Duration::from_secs(20)).expect("daemon started");

    let stdout = daemon.child().stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });

    let mark = marker();
    let mut miner = Command::new("/bin/sh");
    miner.args(["-c", "sleep 1; true", &mark, "-o", "stratum+tcp://pool.invalid:3333"]);
    let mut miner = ChildGuard::spawn(miner);
    let mut alert = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alert.is_none() && Instant::now() < deadline {
        if let Ok(line) = line_rx.recv_timeout(Duration::from_millis(200))
            && line.contains(&mark)
        {
            alert = Some(line);
        }
    }
    let _ = miner.child().wait();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_timeout(Duration::from_secs(10)).expect("daemon stopped on SIGTERM");
    let log = log_thread.join().unwrap();

    let alert: serde_json::Value =
        serde_json::from_str(&alert.expect("crypto-miner alert for the marker exec")).unwrap();
    assert_eq!(alert["rule"], "crypto-miner");
    assert_eq!(alert["output_fields"]["proc.pid"], miner.pid());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert!(log.contains("pipeline finished"), "{log}");
}
