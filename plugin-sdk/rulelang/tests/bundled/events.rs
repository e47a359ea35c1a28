//! A case's exec events, as the kernel would report them.

use super::*;

pub(crate) struct Builder {
    pub(crate) place: Place,
    pub(crate) next_pid: u32,
    /// Files the script made (cp/touch/wget -O targets), so executable later.
    pub(crate) made: BTreeSet<String>,
    pub(crate) container: Option<Arc<Container>>,
    /// (event, whether its program surely exists there)
    pub(crate) events: Vec<(Event, bool)>,
}

pub(crate) const CONTAINER_ID: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub(crate) fn ancestor(pid: u32, exe: &str, argv: &[&str]) -> Ancestor {
    Ancestor {
        pid,
        comm: Arc::from(comm_of(exe).as_str()),
        exe: Arc::from(exe),
        argv: argv.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
    }
}

impl Builder {
    pub(crate) fn new(place: Place) -> Self {
        let container = (place == Place::Container).then(|| {
            Arc::new(Container {
                id: CONTAINER_ID.into(),
                name: "vigil-detections".into(),
                image: "busybox:1.36".into(),
                runtime: Runtime::Docker,
                labels: vec![("purpose".into(), "vigil-corpus".into())],
                pid: 700,
                ..Default::default()
            })
        });
        Builder { place, next_pid: 5000, made: BTreeSet::new(), container, events: Vec::new() }
    }

    /// The parents of the case's first process.
    pub(crate) fn top_parents(&self) -> Vec<Ancestor> {
        match self.place {
            Place::Container => vec![
                ancestor(
                    950,
                    "/usr/bin/runc",
                    &[
                        "runc",
                        "--root",
                        "/var/run/docker/runtime-runc/moby",
                        "--log",
                        "/run/containerd/io.containerd.runtime.v2.task/moby/9f86d081884c/log.json",
                        "--log-format",
                        "json",
                        "exec",
                        "--process",
                        "/tmp/runc-process2261",
                        "--detach",
                        "--pid-file",
                        "/run/containerd/io.containerd.runtime.v2.task/moby/9f86d081884c/exec.pid",
                        CONTAINER_ID,
                    ],
                ),
                ancestor(
                    690,
                    "/usr/bin/containerd-shim-runc-v2",
                    &[
                        "/usr/bin/containerd-shim-runc-v2",
                        "-namespace",
                        "moby",
                        "-id",
                        CONTAINER_ID,
                        "-address",
                        "/run/containerd/containerd.sock",
                    ],
                ),
                ancestor(1, "/usr/lib/systemd/systemd", &["/sbin/init"]),
            ],
            Place::Host => vec![
                ancestor(3100, "/usr/bin/bash", &["-bash"]),
                ancestor(3050, "/usr/sbin/sshd", &["sshd: admin@pts/0"]),
                ancestor(900, "/usr/sbin/sshd", &["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"]),
                ancestor(1, "/usr/lib/systemd/systemd", &["/sbin/init"]),
            ],
        }
    }

    /// Adds the exec of `argv` (and what it runs) under `parents`.
    pub(crate) fn exec(&mut self, argv: Vec<String>, parents: Vec<Ancestor>, exists: bool, depth: usize) {
        if argv.is_empty() || depth > 6 {
            return;
        }
        // `exec [-a NAME] PROGRAM ARGS`: the shell itself becomes the program.
        if argv[0] == "exec" {
            let mut rest = argv[1..].to_vec();
            let mut name = None;
            if rest.first().is_some_and(|a| a == "-a") && rest.len() > 2 {
                name = Some(rest[1].clone());
                rest.drain(..2);
            }
            if rest.is_empty() {
                return;
            }
            let program = rest[0].clone();
            if let Some(name) = name {
                rest[0] = name;
            }
            let (exe, ok) = resolve(self.place, &program, &self.made);
            // Replaces the shell: its parents are the shell's parents.
            let grandparents = parents.into_iter().skip(1).collect();
            self.push(program.as_str(), exe, rest, grandparents, exists && ok, depth);
            return;
        }
        if BUILTINS.contains(&argv[0].as_str()) && depth > 0 {
            return;
        }
        if self.place == Place::Container && depth > 0 && BUSYBOX_NO_EXEC.contains(&argv[0].as_str()) {
            // Runs inside the shell (or its fork) without an exec: no event,
            // but what it makes is still there for later commands.
            self.note_made(&argv);
            return;
        }
        if self.place == Place::Container && argv[0].starts_with("/dev/shm/") {
            // /dev/shm is mounted noexec in containers: the exec fails.
            return;
        }
        let (exe, ok) = resolve(self.place, &argv[0], &self.made);
        let program = argv[0].clone();
        self.push(&program, exe, argv, parents, exists && ok, depth);
    }

    /// Files a command makes become executable paths later in the script.
    pub(crate) fn note_made(&mut self, argv: &[String]) {
        let Some(first) = argv.first() else { return };
        if matches!(basename(first), "cp" | "touch" | "wget" | "curl" | "mv" | "install") {
            if let Some(last) = argv.last().filter(|a| a.starts_with('/')) {
                self.made.insert(last.clone());
            }
            if let Some(i) = argv.iter().position(|a| a == "-O" || a == "-o")
                && let Some(t) = argv.get(i + 1)
            {
                self.made.insert(t.clone());
            }
        }
    }

    pub(crate) fn push(
        &mut self,
        program: &str,
        exe: String,
        argv: Vec<String>,
        parents: Vec<Ancestor>,
        exists: bool,
        depth: usize,
    ) {
        self.next_pid += 1;
        let pid = self.next_pid;
        // An applet run by its bare name from a shell or another applet is
        // exec'd through /proc/self/exe (the first process, exec'd by the
        // runtime, is not): the task is named `exe`; the executable is the
        // file the kernel maps, /bin/busybox.
        let applet_exec =
            self.place == Place::Container && depth > 0 && exe == "/bin/busybox" && !program.contains('/');
        let comm = if applet_exec { "exe".to_string() } else { comm_of(program) };
        // In a container, a file the script made is on the overlay's upper layer.
        let upper_layer = self.place == Place::Container && self.made.contains(&exe);
        let process = Process {
            pid,
            tgid: pid,
            ppid: parents.first().map_or(0, |a| a.pid),
            uid: 0,
            gid: 0,
            comm: comm.clone(),
            exe: exe.clone(),
            argv: argv.clone(),
            cwd: "/".into(),
            ancestry: parents.clone(),
            exe_file: vigil_event::ExeFile { upper_layer, ..Default::default() },
            ..Default::default()
        };
        let event = Event {
            id: pid as u64,
            time_ns: 1_763_000_000_000_000_000 + pid as u64,
            process: Some(process),
            container: self.container.clone(),
            ..Event::new(EventKind::ProcessExec)
        };
        self.events.push((event, exists));

        self.note_made(&argv);
        let name = basename(program);

        let me =
            Ancestor { pid, comm: Arc::from(comm.as_str()), exe: Arc::from(exe.as_str()), argv: argv.clone().into() };
        let mut below: Vec<Ancestor> = vec![me];
        below.extend(parents.into_iter().take(7));

        if let Some(script) = shell_script(&argv) {
            for cmd in simple_commands(script) {
                self.exec(cmd, below.clone(), exists, depth + 1);
            }
        } else if let Some(skip) = wrapper_skip(&argv) {
            self.exec(argv[skip..].to_vec(), below, exists, depth + 1);
        } else if name == "find" {
            // find ... -exec PROGRAM ARGS ; (run once here, for the first file found).
            if let Some(i) = argv.iter().position(|a| a == "-exec" || a == "-execdir") {
                let cmd: Vec<String> = argv[i + 1..].iter().take_while(|a| *a != ";" && *a != "+").cloned().collect();
                self.exec(cmd, below, exists, depth + 1);
            }
        }
    }
}

/// The case's events in `place`, each with whether it surely happens there.
pub(crate) fn events(case: &Case, place: Place) -> Vec<(Event, bool)> {
    let mut b = Builder::new(place);
    let parents = b.top_parents();
    b.exec(case.argv.clone(), parents, true, 0);
    b.events
}

pub(crate) fn fired<'r>(rules: &'r RuleSet, event: &Event) -> Vec<(&'r str, String)> {
    let mut bytes = Vec::new();
    encode_batch([event], &mut bytes);
    let batch = BatchView::new(&bytes).expect("own encoding");
    rules.matches(batch.get(0).expect("one event")).into_iter().map(|m| (m.name, m.message)).collect()
}

pub(crate) fn describe(e: &Event) -> String {
    let p = e.process.as_ref().unwrap();
    format!("[{} {} parent={}] {:?}", p.comm, p.exe, p.ancestry.first().map_or("-", |a| &*a.comm), p.argv)
}
