//! Bundled rules that read the exec facts (terminal, executable file,
//! login identity), over events carrying them: what argv alone cannot show.

use super::*;

fn exec_event(exe: &str, argv: &[&str], in_container: bool, fill: impl FnOnce(&mut Process)) -> Event {
    let mut process = Process {
        pid: 7000,
        tgid: 7000,
        ppid: 6999,
        comm: basename(exe).chars().take(15).collect(),
        exe: exe.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        cwd: "/".into(),
        ancestry: vec![events::ancestor(6999, "/usr/bin/python3.11", &["python3", "app.py"])],
        ..Default::default()
    };
    fill(&mut process);
    let container = in_container.then(|| {
        Arc::new(Container { id: "c".repeat(64), name: "web".into(), runtime: Runtime::Docker, ..Default::default() })
    });
    Event { process: Some(process), container, ..Event::new(EventKind::ProcessExec) }
}

fn names(rules: &RuleSet, e: &Event) -> Vec<String> {
    events::fired(rules, e).into_iter().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn rules_on_exec_facts_fire_on_them_and_only_on_them() {
    let (rules, _) = RuleSet::load(&rule_files());

    // Drift: a program on the upper layer; the same program from the image is quiet.
    let dropped = exec_event("/usr/local/bin/agent", &["agent", "--serve"], true, |p| p.exe_file.upper_layer = true);
    assert!(names(&rules, &dropped).contains(&"Program Written After Container Start Executed".to_string()));
    let from_image = exec_event("/usr/local/bin/agent", &["agent", "--serve"], true, |_| {});
    assert!(names(&rules, &from_image).is_empty(), "{:?}", names(&rules, &from_image));
    // ... unless a package manager installed it.
    let installed = exec_event("/usr/bin/x", &["x"], true, |p| {
        p.exe_file.upper_layer = true;
        p.ancestry = vec![events::ancestor(6999, "/usr/bin/apt-get", &["apt-get", "install", "x"])];
    });
    assert!(!names(&rules, &installed).contains(&"Program Written After Container Start Executed".to_string()));

    // A memfd, whatever path was given to execve.
    let memfd = exec_event("/memfd:x", &["/dev/fd/3"], false, |p| p.exe_file.memfd = true);
    assert!(names(&rules, &memfd).contains(&"Fileless Program Execution".to_string()));

    // A shell on a terminal in a container, started by an application.
    let tty_shell = exec_event("/bin/bash", &["bash"], true, |p| p.tty = Some(vigil_event::Tty::of(136, 0, true)));
    assert!(names(&rules, &tty_shell).contains(&"Interactive Shell Opened In Container".to_string()));

    // A root shell from a user's login session, on the host; not without a login.
    let root_shell = exec_event("/bin/bash", &["-bash"], false, |p| {
        p.tty = Some(vigil_event::Tty::of(136, 2, true));
        p.login_uid = Some(1000);
        p.login_user = "alice".into();
        p.ancestry = vec![events::ancestor(6999, "/usr/bin/sudo", &["sudo", "-i"])];
    });
    assert!(names(&rules, &root_shell).contains(&"Root Shell Opened From A User Login".to_string()));
    let daemon_shell = exec_event("/bin/bash", &["-bash"], false, |p| {
        p.tty = Some(vigil_event::Tty::of(136, 2, true));
        p.ancestry = vec![events::ancestor(6999, "/usr/bin/sudo", &["sudo", "-i"])];
    });
    assert!(!names(&rules, &daemon_shell).contains(&"Root Shell Opened From A User Login".to_string()));

    // A host process that entered a container's namespaces (nsenter): the
    // enricher marks its container; the container's own execs are not.
    let mut entered = exec_event("/bin/sh", &["sh"], true, |p| {
        p.ancestry = vec![events::ancestor(6999, "/usr/bin/nsenter", &["nsenter", "-t", "42", "-a"])]
    });
    let mut c = (**entered.container.as_ref().unwrap()).clone();
    c.labels.push(("vigil.entered-via".into(), "setns".into()));
    entered.container = Some(Arc::new(c));
    assert!(names(&rules, &entered).contains(&"Host Process Entered A Container".to_string()));
    let own = exec_event("/bin/sh", &["sh", "-c", "true"], true, |_| {});
    assert!(!names(&rules, &own).contains(&"Host Process Entered A Container".to_string()));
}
