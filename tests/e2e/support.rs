//! Shared helpers: where things are, a child process that is always
//! killed, an in-memory output, a paced source.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_engine::alert::Alert;
use vigil_engine::event::{Event, EventKind, Process};
use vigil_engine::output::{AlertBatch, Output, OutputError};
use vigil_engine::sources::{EventSender, Interest, Source, SourceError, Stop};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// A built rule component (bundled or test fixture).
pub fn rule_wasm(id: &str) -> PathBuf {
    for dir in ["rules", "example-rules", "test-rules"] {
        let p = target_dir().join(dir).join(format!("{id}.wasm"));
        if p.exists() {
            return p;
        }
    }
    panic!("rule {id} is not built: run scripts/build-rules.sh first");
}

pub fn bundled_rules_dir() -> PathBuf {
    let d = target_dir().join("rules");
    assert!(d.join("declarative.wasm").exists(), "bundled rules not built: run scripts/build-rules.sh first");
    d
}

pub fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// A temp rule directory holding copies of the named rules.
pub fn rule_dir(ids: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        std::fs::copy(rule_wasm(id), dir.path().join(format!("{id}.wasm"))).unwrap();
    }
    dir
}

pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env("RUST_LOG", "info");
    c
}

/// A child process killed (by pid) and reaped when dropped, also on panic.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(mut cmd: Command) -> Self {
        ChildGuard(Some(cmd.stdin(Stdio::null()).spawn().expect("spawn")))
    }
    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    /// Waits up to `timeout` for exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child().try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Says that `what` was skipped and why: on stderr, and in the file
/// `VIGIL_SKIPPED_LOG` names (scripts/test.sh sets it and lists what was
/// skipped at the end, so a skip never reads as a pass).
pub fn skipped(what: &str, why: &str) {
    eprintln!("SKIPPED {what}: {why}");
    if let Some(log) = std::env::var_os("VIGIL_SKIPPED_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{what}: {why}");
        }
    }
}

/// Skips (with a message saying so) when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::support::is_root() {
            $crate::support::skipped(module_path!(), "needs root (run the suite as root, as CI does)");
            return;
        }
    };
}

/// Collects alerts in memory.
#[derive(Clone, Default)]
pub struct MemoryOutput(pub Arc<Mutex<Vec<Alert>>>);

impl Output for MemoryOutput {
    fn name(&self) -> &str {
        "memory"
    }
    fn write(&mut self, batch: &AlertBatch) -> Result<(), OutputError> {
        self.0.lock().unwrap().extend(batch.alerts.iter().cloned());
        Ok(())
    }
}

impl MemoryOutput {
    pub fn alerts(&self) -> Vec<Alert> {
        self.0.lock().unwrap().clone()
    }
}

/// Execs of `exe` with `argv`, one per call.
pub fn exec(exe: &str, argv: &[&str]) -> Event {
    Event {
        time_ns: vigil_engine::time::now_ns(),
        process: Some(Process {
            pid: 100,
            tgid: 100,
            comm: exe.rsplit('/').next().unwrap().into(),
            exe: exe.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Event::new(EventKind::ProcessExec)
    }
}

/// Sends pre-built events at a steady rate, in batches of `batch`, then ends.
/// A `hook` runs at given event counts (to swap rules mid-stream).
pub struct PacedSource {
    pub events: Vec<Event>,
    pub per_sec: u64,
    pub batch: usize,
    pub hooks: Vec<(usize, Box<dyn FnOnce() + Send>)>,
}

impl Source for PacedSource {
    fn name(&self) -> &'static str {
        "paced"
    }
    fn run(self: Box<Self>, mut out: EventSender, stop: Stop, _: Interest) -> Result<(), SourceError> {
        let PacedSource { events, per_sec, batch, mut hooks } = *self;
        hooks.sort_by_key(|(at, _)| *at);
        let mut hooks = hooks.into_iter().peekable();
        let start = Instant::now();
        let mut sent = 0usize;
        let mut it = events.into_iter().peekable();
        while it.peek().is_some() && !stop.is_stopped() {
            while let Some((at, _)) = hooks.peek() {
                if *at > sent {
                    break;
                }
                let (_, hook) = hooks.next().unwrap();
                hook();
            }
            let chunk: Vec<Event> = it.by_ref().take(batch).collect();
            sent += chunk.len();
            if out.send(chunk).is_err() {
                break;
            }
            let due = Duration::from_secs_f64(sent as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for (_, hook) in hooks {
            hook();
        }
        Ok(())
    }
}

/// Appends a custom section to a component: same behaviour, different bytes
/// (so the daemon sees a new version).
pub fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"vigil-test";
    let mut payload = Vec::new();
    leb(&mut payload, name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Writes `bytes` to `dir/name` the way editors and deploy tools do: a temp
/// file, then a rename over the old one.
pub fn replace_atomically(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Runs the pipeline over `source` with rules from `rules_dir`; returns its
/// summary and the alerts it wrote. Alert shaping is off: these tests count
/// every alert.
pub fn run_pipeline(
    mut config: vigil_engine::config::Config,
    rules_dir: &Path,
    watch: bool,
    source: impl Source + 'static,
) -> (vigil_engine::pipeline::Summary, MemoryOutput) {
    config.alerts = vigil_engine::config::AlertsConfig {
        rule_rate: 0,
        global_rate: 0,
        dedup_window: Duration::ZERO,
        ..Default::default()
    };
    let output = MemoryOutput::default();
    let daemon = vigil_engine::daemon::Daemon::new(config)
        .rules(rules_dir.to_path_buf(), watch)
        .with_outputs(vec![Box::new(output.clone())])
        .with_source(Box::new(source));
    (daemon.run().unwrap(), output)
}

/// `vigil run --source SOURCE` with the bundled rules, started and ready
/// (its log said "pipeline running"); stdout lines arrive on `lines`.
pub struct Daemon {
    pub child: ChildGuard,
    pub lines: std::sync::mpsc::Receiver<String>,
    log: Option<std::thread::JoinHandle<String>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(source: &str) -> Daemon {
        Self::start_with(source, "")
    }

    /// With the bundled rules and `config` (TOML) after the test's own settings.
    pub fn start_with(source: &str, config: &str) -> Daemon {
        Self::start_in(source, &bundled_rules_dir(), config)
    }

    /// With the rules in `rules` and `config` (TOML).
    pub fn start_in(source: &str, rules: &Path, config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vigil.toml");
        std::fs::write(&cfg, format!("cache_dir = {:?}\n{config}", dir.path().join("cache"))).unwrap();
        let mut cmd = vigil();
        cmd.args(["run", "--source", source, "--rules"]).arg(rules).arg("--config").arg(&cfg);
        let (child, lines, log) = spawn_logged(cmd, &["pipeline running"]);
        Daemon { child, lines, log: Some(log), _dir: dir }
    }

    /// The first stdout line containing `needle`, within `timeout`.
    pub fn line_with(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && line.contains(needle)
            {
                return Some(line);
            }
        }
        None
    }

    /// SIGTERM, then its exit status and whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.child.signal(libc::SIGTERM);
        let status = self.child.wait_timeout(Duration::from_secs(10)).expect("daemon stopped on SIGTERM");
        let log = self.log.take().unwrap().join().unwrap();
        (status, log)
    }
}

/// Starts `cmd` with its stdout lines on a channel and its stderr kept
/// (the thread's result), once stderr has shown each of `ready` (in any
/// order, within 30 s).
pub fn spawn_logged(
    mut cmd: Command,
    ready: &[&str],
) -> (ChildGuard, std::sync::mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let stderr = child.child().stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let markers: Vec<String> = ready.iter().map(|m| m.to_string()).collect();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for m in markers.iter().filter(|m| line.contains(m.as_str())) {
                let _ = ready_tx.send(m.clone());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let stdout = child.child().stdout.take().unwrap();
    let (line_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < ready.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = ready_rx.recv_timeout(left).unwrap_or_else(|_| panic!("not ready: waited for {ready:?}, saw {seen:?}"));
        seen.insert(m);
    }
    (child, lines, log)
}

/// `line` is the crypto-miner rule's alert for the process `pid`.
pub fn assert_miner_alert(line: Option<String>, pid: u32) {
    let alert: serde_json::Value = serde_json::from_str(&line.expect("a miner alert for the marker exec")).unwrap();
    assert_eq!(alert["rule"], "Crypto Miner Started");
    assert_eq!(alert["output_fields"]["proc.pid"], pid);
}

/// A cgroup named as Docker names a container's, removed (with its parent
/// if this test made it) when dropped.
pub struct ContainerCgroup {
    pub dir: std::path::PathBuf,
    made_parent: Option<std::path::PathBuf>,
    pub id: String,
}

impl ContainerCgroup {
    pub fn new(root: &std::path::Path, n: u64) -> ContainerCgroup {
        let parent = root.join("docker");
        let made_parent = (!parent.exists()).then(|| parent.clone());
        let id = format!("{:032x}{:032x}", 0xc0ffee_u128 + n as u128, vigil_engine::time::now_ns() as u128);
        let dir = parent.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        ContainerCgroup { dir, made_parent, id }
    }

    /// Runs `/bin/true <marker>` inside the cgroup (the shell moves itself
    /// in, then execs) and waits for it.
    pub fn exec_in(&self, marker: &str) {
        let script = format!("echo $$ > {}/cgroup.procs && exec /bin/true {marker}", self.dir.display());
        let mut child = ChildGuard::spawn({
            let mut c = Command::new("/bin/sh");
            c.args(["-c", &script]);
            c
        });
        assert!(child.child().wait().unwrap().success(), "moving into {} failed", self.dir.display());
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(p) = &self.made_parent {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// A private container runtime (dockerd, or Podman's API service) started
/// by scripts/runtimes.sh on its own socket and directories; stopped, with
/// its containers, by pid when dropped.
pub struct RuntimeDaemon {
    runtime: vigil_engine::event::Runtime,
    dir: tempfile::TempDir,
    /// How scripts/runtimes.sh starts it (`CGROUP_V1_ONLY`, `OWN_NETNS`).
    env: &'static [(&'static str, &'static str)],
}

impl RuntimeDaemon {
    pub fn docker() -> RuntimeDaemon {
        Self::start(vigil_engine::event::Runtime::Docker)
    }

    pub fn podman() -> RuntimeDaemon {
        Self::start(vigil_engine::event::Runtime::Podman)
    }

    /// containerd with its CRI plugin (driven through CRI, see `CriClient`).
    pub fn containerd() -> RuntimeDaemon {
        Self::start(vigil_engine::event::Runtime::Containerd)
    }

    /// dockerd in a private mount namespace without the unified cgroup
    /// hierarchy: its containers live in cgroup v1 only, as on a legacy v1
    /// host. Needs a hybrid host (v1 controllers mounted).
    pub fn docker_in_cgroup_v1() -> RuntimeDaemon {
        Self::start_with(vigil_engine::event::Runtime::Docker, &[("CGROUP_V1_ONLY", "1")])
    }

    /// dockerd in a network namespace of its own: its networks and
    /// published ports never touch the host's.
    pub fn docker_in_own_netns() -> RuntimeDaemon {
        Self::start_with(vigil_engine::event::Runtime::Docker, &[("OWN_NETNS", "1")])
    }

    fn start(runtime: vigil_engine::event::Runtime) -> RuntimeDaemon {
        Self::start_with(runtime, &[])
    }

    fn start_with(
        runtime: vigil_engine::event::Runtime,
        env: &'static [(&'static str, &'static str)],
    ) -> RuntimeDaemon {
        let d = RuntimeDaemon { runtime, dir: tempfile::tempdir().unwrap(), env };
        assert!(d.script("start").success(), "{} did not start (scripts/runtimes.sh install first)", d.name());
        d
    }

    fn script(&self, verb: &str) -> std::process::ExitStatus {
        Command::new(workspace().join("scripts/runtimes.sh"))
            .arg(format!("{verb}-{}", self.name()))
            .arg(self.dir.path())
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .status()
            .unwrap()
    }

    pub fn name(&self) -> &'static str {
        self.runtime.name()
    }

    pub fn runtime(&self) -> vigil_engine::event::Runtime {
        self.runtime
    }

    /// The test image's name as the runtime reports it.
    pub fn image(&self) -> &'static str {
        match self.runtime {
            vigil_engine::event::Runtime::Podman | vigil_engine::event::Runtime::Containerd => {
                "localhost/vigil-busybox:test"
            }
            _ => "vigil-busybox:test",
        }
    }

    /// Stops the daemon (by pid), keeping its containers.
    pub fn kill(&self) {
        assert!(self.script("kill").success());
    }

    /// Starts it again on the same socket and directories.
    pub fn restart(&self) {
        assert!(self.script("start").success(), "{} did not restart", self.name());
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("{}.sock", self.name()))
    }

    /// Runs the runtime's client against this daemon; its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = match self.runtime {
            vigil_engine::event::Runtime::Podman => {
                let mut c = Command::new("podman");
                c.arg("--remote").arg("--url").arg(format!("unix://{}", self.socket().display()));
                c
            }
            _ => {
                let mut c = Command::new("docker");
                c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()));
                c
            }
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{} {args:?}: {}", self.name(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RuntimeDaemon {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// Polls `done` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// GET `url` (plain HTTP): status and body.
pub fn http_get(url: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// A loopback port free now (for a daemon's metrics endpoint).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `vigil run --realtime` over 40 bash execs (in a container when
/// `container`), 100 ms apart, with the rules in `rules`; after five alerts
/// the config disables `disable` and SIGHUP applies it. Returns the event
/// numbers alerted on (all of them, before and after) and the daemon's log.
pub fn replay_then_disable_by_sighup(rules: &Path, container: bool, disable: &str) -> (Vec<u64>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    let cache = dir.path().join("cache");
    // The 40 alerts are identical but for the pid: no folding here.
    std::fs::write(&cfg, format!("cache_dir = {cache:?}\n[alerts]\ndedup_window = \"0s\"\n")).unwrap();
    let in_container = if container { r#","container":{"id":"c1","name":"web","image":"nginx"}"# } else { "" };
    let mut lines = String::new();
    for i in 0..40u64 {
        lines.push_str(&format!(
            r#"{{"kind":"process-exec","time_ns":{},"process":{{"pid":{},"comm":"bash","exe":"/bin/bash","argv":["bash"]}}{in_container}}}"#,
            1_700_000_000_000_000_000u64 + i * 100_000_000,
            100 + i
        ));
        lines.push('\n');
    }
    let replay = dir.path().join("slow.jsonl");
    std::fs::write(&replay, lines).unwrap();

    let mut cmd = vigil();
    cmd.args(["run", "--realtime", "--replay"]).arg(&replay).arg("--rules").arg(rules).arg("--config").arg(&cfg);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(cmd);
    let stdout = daemon.child().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut alerted = Vec::new();
    let num = |l: String| {
        serde_json::from_str::<serde_json::Value>(&l).unwrap()["output_fields"]["evt.num"].as_u64().unwrap()
    };
    for _ in 0..5 {
        alerted.push(num(rx.recv_timeout(Duration::from_secs(10)).expect("alerts before the reload")));
    }
    std::fs::write(&cfg, format!("cache_dir = {cache:?}\n[rules]\ndisable = [{disable:?}]\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    let status = daemon.wait_timeout(Duration::from_secs(15)).expect("replay finished");
    assert!(status.success());
    let mut err = String::new();
    use std::io::Read;
    daemon.child().stderr.take().unwrap().read_to_string(&mut err).unwrap();
    alerted.extend(rx.try_iter().map(num));
    (alerted, err)
}
