//! A storm under a tracer (bpftrace or vigil): rate, completeness, CPU.

use super::*;

#[derive(Clone, Copy)]
pub(crate) enum Tracer<'a> {
    Bpftrace,
    VigilEvents,
    /// `vigil run` with the bundled rules.
    VigilRun,
    /// `vigil run` with the rules in this directory.
    VigilRunRules(&'a Path),
}

pub(crate) struct Traced {
    pub(crate) rate: f64,
    pub(crate) slowdown: f64,
    pub(crate) captured: u64,
    pub(crate) cpu_s: f64,
    pub(crate) wall_s: f64,
    /// Mean run time of each of its BPF programs, when statistics are on.
    pub(crate) program_costs: Option<String>,
}

pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: no preconditions.
    cpu_ticks(Path::new(&format!("/proc/{pid}"))) as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// User plus system CPU ticks of the process or thread whose /proc
/// directory is `dir`.
pub(crate) fn cpu_ticks(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A storm while `tracer` runs; counts the storm's execs it reports.
pub(crate) fn traced(
    noop: &Path,
    shape: Shape,
    total: usize,
    base_rate: f64,
    tracer: Tracer,
    config: Option<&Path>,
) -> Traced {
    let tag = match tracer {
        Tracer::Bpftrace => "bpftrace",
        Tracer::VigilEvents => "events",
        Tracer::VigilRun | Tracer::VigilRunRules(_) => "run",
    };
    // Another build to compare with (`VIGIL_BENCH_VIGIL`, with its own
    // `VIGIL_BENCH_RULES` when the rule interface changed between them).
    let vigil = std::env::var("VIGIL_BENCH_VIGIL").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vigil").to_string());
    let rules = match tracer {
        Tracer::VigilRunRules(dir) => dir.to_path_buf(),
        _ => std::env::var_os("VIGIL_BENCH_RULES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules")),
    };
    let mut cmd = match tracer {
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", "tracepoint:sched:sched_process_exec { printf(\"%d %s\\n\", pid, str(args->filename)); }"]);
            c
        }
        Tracer::VigilEvents => {
            let mut c = Command::new(vigil);
            c.args(["events", "--source", "ebpf", "--kind", "process-exec"]);
            c
        }
        Tracer::VigilRun | Tracer::VigilRunRules(_) => {
            let mut c = Command::new(vigil);
            c.args(["run", "--source", "ebpf", "--rules"]).arg(&rules);
            c
        }
    };
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).env("RUST_LOG", "info");
    let mut child = Killed(cmd.spawn().expect("start the tracer"));
    let pid = child.0.id();

    // Ready when the tracer says so.
    let stderr = child.0.stderr.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ready_on_stdout = matches!(tracer, Tracer::Bpftrace);
    let ready_err = ready_tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pipeline running") || line.contains("eBPF programs attached") {
                let _ = ready_err.send(());
            }
        }
    });
    let captured = Arc::new(AtomicU64::new(0));
    let counter = captured.clone();
    let needle = noop.to_string_lossy().into_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if ready_on_stdout && line.starts_with("Attaching") {
                let _ = ready_tx.send(());
            } else if line.contains(&needle) && (ready_on_stdout || line.contains("\"kind\":\"process-exec\"")) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).expect("tracer ready");
    std::thread::sleep(Duration::from_millis(300));

    let cpu0 = cpu_seconds(pid);
    let s = storm(noop, shape, tag, total, None);
    // Let the tracer catch up: until its count stops moving.
    let mut last = u64::MAX;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let now = captured.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let wall_s = s.elapsed.as_secs_f64();
    let cpu_s = cpu_seconds(pid) - cpu0;
    let program_costs = program_costs(pid);
    drop(child);
    Traced {
        rate: s.rate(),
        slowdown: base_rate / s.rate() - 1.0,
        captured: captured.load(Ordering::Relaxed),
        cpu_s,
        wall_s,
        program_costs,
    }
}

/// Kernel time per program run of bpftrace's one program and of Vigil's
/// (exec, fork, exit; in `vigil run` with its defaults), each under a
/// spawn storm. The kernel's run-time statistics are on only for this
/// phase (`BPF_ENABLE_STATS`, held by an fd): they read the clock twice per
/// program run, three runs per exec for Vigil, one for bpftrace, so the
/// overhead phases run without them, as a host does.
pub(crate) fn program_costs_phase(noop: &Path, total: usize) {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let base = storm(noop, Shape::Spawn, "costs", total, None).rate();
    for (label, tracer) in [("bpftrace", Tracer::Bpftrace), ("vigil run", Tracer::VigilRun)] {
        let t = traced(noop, Shape::Spawn, total, base, tracer, None);
        let costs = t.program_costs.unwrap_or_else(|| "no program ran (statistics off?)".into());
        println!("kernel time per program run (bpf_stats), {label}, in program-id order: {costs}");
    }
}

/// Mean run time of each BPF program `pid` holds, from fdinfo (needs the
/// kernel's run-time statistics on: [`program_costs_phase`]).
pub(crate) fn program_costs(pid: u32) -> Option<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?.flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let get = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(id), Some(ns), Some(n)) = (get("prog_id:"), get("run_time_ns:"), get("run_cnt:"))
            && n > 0
        {
            out.push((id, format!("{} ns × {n}", ns / n)));
        }
    }
    out.sort();
    out.dedup();
    (!out.is_empty()).then(|| out.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(", "))
}
