//! The exec facts detections are built on, read at the exec on the running
//! kernel (`vigil events`, as root): the working directory, a `#!` script
//! and its interpreter, the real executable behind /proc/self/fd, a memfd
//! and an unlinked file, the controlling terminal, the audit login identity
//! across a uid change, user names; in a container, a file written after
//! it started (overlayfs upper layer) and the container's own user names.
//! The proc connector fills what /proc gives.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vigil_engine::event::{Event, EventKind, Process};

use crate::require_root;
use crate::streaming::Streaming;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

/// The exec carrying `marker` in its argv.
fn marked(marker: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e: &Event| {
        e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.argv.iter().any(|a| a == marker))
    }
}

/// The exec whose argv is exactly `argv`.
fn exact<'a>(argv: &'a [&'a str]) -> impl Fn(&Event) -> bool + 'a {
    move |e: &Event| e.kind == EventKind::ProcessExec && e.process.as_ref().is_some_and(|p| p.argv == argv)
}

fn process_of(events: &Streaming, marker: &str) -> Process {
    let e = events.event(WAIT, marked(marker)).unwrap_or_else(|| panic!("no exec with {marker}"));
    e.process.unwrap()
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status:?}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}

/// Copies `/bin/true` into a new file descriptor: a memfd, or a file
/// opened read-only then unlinked (no writer may be open when it runs).
/// The descriptor is inherited (no close-on-exec).
fn true_in_fd(memfd: bool, dir: &Path) -> i32 {
    let bytes = std::fs::read("/bin/true").unwrap();
    if !memfd {
        let path = dir.join("doomed");
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: plain syscalls on a name that outlives them.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        std::fs::remove_file(&path).unwrap();
        return fd;
    }
    // SAFETY: plain syscalls on a name and a buffer that outlive them.
    unsafe {
        let fd = libc::memfd_create(c"vigil-e2e".as_ptr(), 0);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        assert_eq!(libc::write(fd, bytes.as_ptr().cast(), bytes.len()), bytes.len() as isize);
        fd
    }
}

#[test]
fn the_ebpf_source_reads_the_exec_facts_in_the_kernel() {
    require_root!();
    let events = Streaming::start(None, &["events", "--source", "ebpf", "--kind", "process-exec"]);
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("work").join("deep");
    std::fs::create_dir_all(&deep).unwrap();
    let deep = deep.canonicalize().unwrap();

    // cwd, and a relative `#!` script: its path and its interpreter.
    let cwd_marker = format!("cwd-{pid}");
    run(Command::new("/bin/true").arg(&cwd_marker).current_dir(&deep));
    let script = deep.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script_marker = format!("script-{pid}");
    run(Command::new("./run.sh").arg(&script_marker).current_dir(&deep));

    // Fileless: a memfd, and a file deleted before it runs, both through
    // /proc/self/fd (the path string names neither).
    let memfd_marker = format!("memfd-{pid}");
    let fd = true_in_fd(true, dir.path());
    run(Command::new(format!("/proc/self/fd/{fd}")).arg0("x").arg(&memfd_marker));
    let unlinked_marker = format!("unlinked-{pid}");
    let fd2 = true_in_fd(false, dir.path());
    run(Command::new(format!("/proc/self/fd/{fd2}")).arg(&unlinked_marker));
    // SAFETY: our own descriptors.
    unsafe {
        libc::close(fd);
        libc::close(fd2);
    }

    // A re-exec through /proc/self/exe (busybox applets, runc): the file.
    let reexec_marker = format!("reexec-{pid}");
    run(Command::new("/bin/sh").args(["-c", "exec /proc/self/exe -c : \"$0\"", &reexec_marker]));

    // A terminal: a pty `script` opens.
    let tty_marker = format!("tty-{pid}");
    let has_script = on_path("script");
    if has_script {
        run(Command::new("script").args(["-qc", &format!("/bin/true {tty_marker}"), "/dev/null"]));
    }

    // A login uid that survives a uid change.
    let login_marker = format!("login-{pid}");
    let login = Command::new("/bin/sh")
        .args([
            "-c",
            "echo 4242 > /proc/self/loginuid || exit 3; exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/true \"$0\"",
            &login_marker,
        ])
        .status()
        .unwrap();

    let p = process_of(&events, &cwd_marker);
    assert_eq!(p.cwd, deep.to_string_lossy(), "{p:?}");
    assert!(!p.cwd_truncated && p.script.is_empty());
    assert_eq!(p.exe, Path::new("/bin/true").canonicalize().unwrap().to_string_lossy());
    assert_eq!(p.user, "root", "uid 0 named from /etc/passwd");
    assert_ne!(p.exe_file.inode, 0);
    assert!(!p.exe_file.fileless() && !p.exe_file.upper_layer, "{:?}", p.exe_file);

    let p = process_of(&events, &script_marker);
    assert_eq!(p.script, script.to_string_lossy(), "the script, made absolute: {p:?}");
    assert_eq!(p.exe, Path::new("/bin/sh").canonicalize().unwrap().to_string_lossy(), "its interpreter");
    assert_eq!(p.cwd, deep.to_string_lossy());

    let p = process_of(&events, &memfd_marker);
    assert!(p.exe_file.memfd && !p.exe_file.unlinked, "{p:?}");
    assert!(p.exe.starts_with("/memfd:vigil-e2e"), "the memfd's name, not /proc/self/fd: {}", p.exe);
    let p = process_of(&events, &unlinked_marker);
    assert!(p.exe_file.unlinked && !p.exe_file.memfd, "{p:?}");
    assert!(p.exe.ends_with("/doomed"), "the deleted file's path: {}", p.exe);

    let p = events.event(WAIT, exact(&["/proc/self/exe", "-c", ":", &reexec_marker])).expect("the re-exec").process;
    let p = p.unwrap();
    assert_eq!(p.exe, Path::new("/bin/sh").canonicalize().unwrap().to_string_lossy(), "the real file: {p:?}");

    if has_script {
        let p = process_of(&events, &tty_marker);
        let tty = p.tty.as_ref().unwrap_or_else(|| panic!("a terminal: {p:?}"));
        assert!(tty.pty && tty.name.starts_with("pts/") && tty.device != 0, "{tty:?}");
    } else {
        skipped("exec_facts terminal", "`script` (util-linux) is not installed");
    }

    match login.code() {
        Some(0) => {
            let e = events.event(WAIT, exact(&["/bin/true", &login_marker])).expect("the exec after setpriv");
            let p = e.process.unwrap();
            assert_eq!((p.uid, p.login_uid, p.session_id.is_some()), (65534, Some(4242), true), "{p:?}");
            assert_eq!(p.user, "nobody", "uid 65534 named");
            assert_eq!(p.login_user, "", "4242 has no name here");
        }
        _ => skipped(
            "exec_facts login uid",
            "this process cannot set /proc/self/loginuid (no CAP_AUDIT_CONTROL, immutable loginuid, or no audit)",
        ),
    }
    events.stop();
}

#[test]
fn the_proc_connector_reads_what_proc_gives() {
    require_root!();
    if !on_path("script") {
        skipped(module_path!(), "`script` (util-linux) is not installed");
        return;
    }
    let events = Streaming::start(None, &["events", "--source", "proc", "--kind", "process-exec"]);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let marker = format!("proc-facts-{}", std::process::id());
    // Long-lived enough for /proc to be read after the event.
    run(Command::new("script")
        .args(["-qc", &format!("/bin/sh -c 'sleep 1; true' {marker}"), "/dev/null"])
        .current_dir(&dir_path));
    let p = process_of(&events, &marker);
    assert_eq!(p.cwd, dir_path.to_string_lossy());
    assert!(p.tty.as_ref().is_some_and(|t| t.pty && t.name.starts_with("pts/")), "{p:?}");
    assert_eq!(p.user, "root");
    assert_ne!(p.exe_file.inode, 0);
    events.stop();
}

#[test]
fn in_a_container_a_dropped_binary_is_on_the_upper_layer_and_users_are_the_containers() {
    require_root!();
    let rt = RuntimeDaemon::docker();
    let events = Streaming::start(Some(&rt), &["events", "--source", "ebpf", "--kind", "process-exec"]);
    let pid = std::process::id();
    let (image, dropped) = (format!("image-{pid}"), format!("dropped-{pid}"));
    let name = format!("vigil-e2e-drift-{pid}");
    // The image's busybox, then a copy written into the running container.
    // The test image has no /etc: the container writes its own passwd,
    // naming uid 1234, which the host's does not (names are re-read when an
    // id is not found, at most every millisecond).
    let script = format!(
        "mkdir -p /etc /tmp; echo 'root:x:0:0::/:/bin/sh' > /etc/passwd; echo 'root:x:0:' > /etc/group; \
         echo 'svc:x:1234:1234::/:/bin/sh' >> /etc/passwd; sleep 0.01; /bin/busybox true {image}; \
         cp /bin/busybox /tmp/bb; /tmp/bb true {dropped}; sleep 10"
    );
    let id = rt.cli(&["run", "-d", "--name", &name, "--network", "none", rt.image(), "/bin/sh", "-c", &script]);
    let from_image = events.event(Duration::from_secs(20), marked(&image));
    let from_upper = events.event(WAIT, marked(&dropped));
    // The runtime switches the uid (`docker exec -u`).
    let user_marker = format!("user-{pid}");
    rt.cli(&["exec", "-u", "1234", &name, "/bin/busybox", "true", &user_marker]);
    let as_user = events.event(WAIT, exact(&["/bin/busybox", "true", &user_marker]));
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();

    let e = from_image.unwrap_or_else(|| panic!("the image's binary ran\n{log}"));
    assert_eq!(e.container.as_ref().map(|c| c.id.as_str()), Some(id.as_str()));
    let p = e.process.unwrap();
    assert!(!p.exe_file.upper_layer, "the image's own binary is on a lower layer: {p:?}");
    assert_eq!(p.user, "root");
    let p = from_upper.unwrap_or_else(|| panic!("the dropped binary ran\n{log}")).process.unwrap();
    assert!(p.exe_file.upper_layer, "written after the container started: {p:?}");
    assert_eq!(p.exe, "/tmp/bb", "the path inside the container");
    let p = as_user.unwrap_or_else(|| panic!("the exec as uid 1234 ran\n{log}")).process.unwrap();
    assert_eq!((p.uid, p.user.as_str()), (1234, "svc"), "named from the container's /etc/passwd");
}

/// Interface 0.2.1 only appended to the packed header: a rule built for
/// 0.2.0 (a fixture, `echo` as it was built then) loads beside today's and
/// sees every event carrying the new facts.
#[test]
fn a_rule_built_for_interface_0_2_0_still_loads_and_sees_every_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("rules/echo-interface-0.2.0.wasm"), dir.path().join("echo.wasm")).unwrap();
    const N: usize = 500;
    let events: Vec<_> = (0..N)
        .map(|i| {
            let mut e = exec("/bin/ok", &["ok", &i.to_string()]);
            let p = e.process.as_mut().unwrap();
            p.tty = Some(vigil_engine::event::Tty::of(136, 1, true));
            p.exe_file.upper_layer = true;
            p.script = "/tmp/x.sh".into();
            p.user = "root".into();
            e
        })
        .collect();
    let source = PacedSource { events, per_sec: 100_000, batch: 50, hooks: Vec::new() };
    let (summary, output) = run_pipeline(vigil_engine::config::Config::default(), dir.path(), false, source);
    let echo = &summary.rules.iter().find(|(id, _)| id == "echo").expect("the 0.2.0 rule loaded").1;
    assert_eq!(echo.faults(), 0);
    assert_eq!(output.alerts().len(), N, "one alert per event");
}

/// `nsenter -t <pid>` from the host stays in a host cgroup: its exec is
/// attributed to the container whose namespaces it entered, marked
/// `vigil.entered-via=setns`; `docker exec` is the container's own, unmarked.
#[test]
fn a_host_process_entering_a_container_with_nsenter_is_attributed_to_it_marked() {
    require_root!();
    if !on_path("nsenter") {
        skipped(module_path!(), "`nsenter` (util-linux) is not installed");
        return;
    }
    let rt = RuntimeDaemon::docker();
    let events = Streaming::start(Some(&rt), &["events", "--source", "ebpf", "--kind", "process-exec"]);
    let pid = std::process::id();
    let name = format!("vigil-e2e-nsenter-{pid}");
    let id = rt.cli(&["run", "-d", "--name", &name, "--network", "none", rt.image(), "/bin/sleep", "30"]);
    let (exec_marker, nsenter_marker) = (format!("docker-exec-{pid}"), format!("nsenter-{pid}"));
    rt.cli(&["exec", &name, "/bin/busybox", "true", &exec_marker]);
    let by_exec = events.event(Duration::from_secs(20), exact(&["/bin/busybox", "true", &exec_marker]));
    let target = rt.cli(&["inspect", "-f", "{{.State.Pid}}", &name]);
    run(Command::new("nsenter")
        .args(["-t", target.trim(), "-m", "-u", "-i", "-n", "-p", "/bin/busybox", "true"])
        .arg(&nsenter_marker));
    let by_nsenter = events.event(WAIT, exact(&["/bin/busybox", "true", &nsenter_marker]));
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();

    let marked = |e: &Event| {
        e.container.as_ref().is_some_and(|c| c.labels.iter().any(|(k, v)| k == "vigil.entered-via" && v == "setns"))
    };
    let e = by_exec.unwrap_or_else(|| panic!("the docker exec ran\n{log}"));
    assert_eq!(e.container.as_ref().map(|c| c.id.as_str()), Some(id.as_str()));
    assert!(!marked(&e), "docker exec joins the container's cgroup: {:?}", e.container);
    let e = by_nsenter.unwrap_or_else(|| panic!("the nsenter exec ran\n{log}"));
    let c = e.container.as_ref().unwrap_or_else(|| panic!("attributed to the container: {e:?}"));
    assert_eq!((c.id.as_str(), c.name.as_str()), (id.as_str(), name.as_str()), "described as the container");
    assert!(marked(&e), "{:?}", c.labels);
}

/// A container that ran nothing since the daemon started is known by its
/// first process; a host process that joins its mount namespace with
/// setns(2) and exits without an exec is attributed to it at its exit: the
/// kernel's setns is traced and the process tree's namespaces follow it.
#[test]
fn a_host_process_that_joins_a_container_with_setns_is_attributed_without_an_exec() {
    require_root!();
    if !on_path("python3") {
        skipped(module_path!(), "`python3` (to call setns(2) without an exec) is not installed");
        return;
    }
    let rt = RuntimeDaemon::docker();
    let pid = std::process::id();
    let name = format!("vigil-e2e-setns-{pid}");
    // Started before the daemon: none of its execs is seen.
    let id = rt.cli(&["run", "-d", "--name", &name, "--network", "none", rt.image(), "/bin/sleep", "30"]);
    let events = Streaming::start(Some(&rt), &["events", "--source", "ebpf", "--kind", "process-exit"]);
    let target = rt.cli(&["inspect", "-f", "{{.State.Pid}}", &name]);
    // setns(fd, 0) through libc, then _exit: no exec after the setns.
    let joiner = format!(
        "import ctypes, os\nfd = os.open('/proc/{}/ns/mnt', os.O_RDONLY)\n\
         assert ctypes.CDLL(None, use_errno=True).setns(fd, 0) == 0, ctypes.get_errno()\nos._exit(7)",
        target.trim()
    );
    let status = Command::new("python3").args(["-c", &joiner]).status().unwrap();
    assert_eq!(status.code(), Some(7), "the setns helper ran");
    let exit = events.event(WAIT, |e: &Event| {
        e.kind == EventKind::ProcessExit
            && e.exit_code == Some(7)
            && e.process.as_ref().is_some_and(|p| p.comm.starts_with("python"))
    });
    rt.cli(&["rm", "-f", &name]);
    let log = events.stop();

    let e = exit.unwrap_or_else(|| panic!("the helper's exit\n{log}"));
    let c = e.container.as_ref().unwrap_or_else(|| panic!("attributed to the container it joined: {e:?}\n{log}"));
    assert_eq!((c.id.as_str(), c.name.as_str()), (id.as_str(), name.as_str()));
    assert!(c.labels.iter().any(|(k, v)| k == "vigil.entered-via" && v == "setns"), "{:?}", c.labels);
}
