//! The daemon run against the receiver: replay files, configs, the process.

use super::*;

/// A replay file of `n` crypto-miner execs, each with its own marker,
/// `gap` apart.
pub(crate) fn miner_replay(dir: &Path, name: &str, n: usize, gap: Duration) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("{\"vigil-replay\": 1}\n");
    let t0 = 1_763_000_000_000_000_000u64;
    for i in 0..n {
        let e = serde_json::json!({
            "kind": "process-exec",
            "time_ns": t0 + i as u64 * gap.as_nanos() as u64,
            "process": {
                "pid": 10_000 + i, "tgid": 10_000 + i, "ppid": 1, "uid": 0, "gid": 0,
                "comm": "xmrig", "exe": "/tmp/xmrig",
                "argv": ["xmrig", "-o", "stratum+tcp://pool.example:3333", "--marker", format!("{name}-{i}")],
                "cwd": "/tmp", "ancestry": []
            }
        });
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A config with one webhook named `t` to `url`, shaping off (every alert
/// counts here), `webhook` added to the webhook's table and `extra` after it.
pub(crate) fn config(dir: &Path, url: &str, webhook: &str, extra: &str) -> PathBuf {
    let path = dir.join("vigil.toml");
    let text = format!(
        r#"cache_dir = {cache:?}
[output]
spool_dir = {spool:?}
[alerts]
rule_rate = 0
global_rate = 0
dedup_window = "0s"
[[output.webhook]]
name = "t"
url = "{url}"
hmac_secret = "{SECRET}"
retry_initial = "100ms"
retry_max = "500ms"
max_delay = "20ms"
{webhook}
{extra}
"#,
        cache = dir.join("cache"),
        spool = dir.join("spool"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `vigil` process whose stdout (alerts) and stderr (log) are collected.
pub(crate) struct Vigil {
    pub(crate) child: ChildGuard,
    pub(crate) stdout: Arc<Mutex<Vec<String>>>,
    pub(crate) log: Arc<Mutex<String>>,
}

impl Vigil {
    pub(crate) fn start(args: &[&str], rules: &Path, config: &Path) -> Vigil {
        let mut cmd: Command = vigil();
        cmd.args(args).arg("--rules").arg(rules).arg("--config").arg(config);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.child().stdout.take().unwrap();
        let err = child.child().stderr.take().unwrap();
        let s = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                s.lock().unwrap().push(line);
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Vigil { child, stdout, log }
    }

    /// Waits for exit (panics past `timeout`), then for the output threads.
    pub(crate) fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status =
            self.child.wait_timeout(timeout).unwrap_or_else(|| panic!("vigil still running; log:\n{}", self.log()));
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn alert_ids(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub(crate) fn alerts(&self) -> Vec<Value> {
        self.stdout.lock().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The first log line containing `needle`, within `timeout`.
    pub(crate) fn log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The metrics endpoint's address, from the log.
    pub(crate) fn metrics_addr(&self) -> String {
        let line =
            self.log_line("metrics endpoint listening", Duration::from_secs(30)).expect("metrics endpoint started");
        let at = line.find("addr=").unwrap() + 5;
        line[at..].split_whitespace().next().unwrap().to_string()
    }
}
