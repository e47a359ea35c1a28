//! `vigil events` (or `record`) running as a child, its events read from
//! its stdout as they come.

use std::time::{Duration, Instant};

use vigil_engine::event::Event;

use crate::support::*;

/// `vigil ARGS` running with a config naming only `docker`'s socket (or no
/// runtime), its stdout lines on a channel; ready once its source runs (and
/// its Docker watcher connected, with `docker`).
pub struct Streaming {
    child: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    log: std::thread::JoinHandle<String>,
    _dir: tempfile::TempDir,
}

impl Streaming {
    pub fn start(docker: Option<&RuntimeDaemon>, args: &[&str]) -> Streaming {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vigil.toml");
        let socket = docker.map(|rt| rt.socket().to_string_lossy().into_owned()).unwrap_or_default();
        std::fs::write(
            &cfg,
            format!("[containers]\ndocker_socket = {socket:?}\npodman_socket = \"\"\ncri_socket = \"\"\n"),
        )
        .unwrap();
        let mut cmd = vigil();
        cmd.args(args).arg("--config").arg(&cfg);
        let ready: &[&str] =
            if docker.is_some() { &["watching runtime", "streaming events"] } else { &["streaming events"] };
        let (child, lines, log) = spawn_logged(cmd, ready);
        Streaming { child, lines, log, _dir: dir }
    }

    /// The first event on stdout that `wanted` accepts, within `timeout`.
    pub fn event(&self, timeout: Duration, wanted: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && let Ok(e) = serde_json::from_str::<Event>(&line)
                && wanted(&e)
            {
                return Some(e);
            }
        }
        None
    }

    /// Stops it with SIGTERM; returns its log (it must exit cleanly).
    pub fn stop(mut self) -> String {
        self.child.signal(libc::SIGTERM);
        let status = self.child.wait_timeout(Duration::from_secs(15)).expect("stopped on SIGTERM");
        let log = self.log.join().unwrap();
        assert!(status.success(), "{status:?}\n{log}");
        log
    }
}
