//! Vigil rule `shell-in-container`: an interactive or scripted shell started
//! inside a container, the first step of most hands-on-keyboard intrusions
//! (MITRE ATT&CK T1059.004). Shells a container's own entrypoint runs (the
//! container's first process) are not reported.

use vigil_sdk::prelude::*;

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ash", "ksh", "csh", "tcsh", "fish", "busybox"];

/// A shell was started inside a container.
#[rule(
    id = "shell-in-container",
    subscribe = [ProcessExec],
    tags = ["container", "shell", "mitre_execution", "T1059.004"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let container = event.container()?;
    let process = event.process()?;
    let name = process.exe_basename();
    if !SHELLS.contains(&name) {
        return None;
    }
    // busybox is a shell only when invoked as one.
    if name == "busybox" && !SHELLS.contains(&vigil_sdk::basename(process.arg(0).unwrap_or(""))) {
        return None;
    }
    // The container's entrypoint being a shell script is normal.
    if container.pid() != 0 && container.pid() == process.tgid() {
        return None;
    }
    Some(
        Alert::warning(format!(
            "Shell spawned in container (command={} container={} image={} parent={})",
            process.cmdline(),
            container.name(),
            container.image(),
            process.parent().map_or("?", |p| p.comm),
        ))
        .tags(["container", "shell", "mitre_execution", "T1059.004"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    #[test]
    fn shell_in_container_alerts() {
        let alerts = run(
            detect,
            [exec("/bin/bash", ["bash", "-i"]).container("web", "nginx:1.25").ancestor(50, "/usr/bin/runc")],
        );
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].priority, Priority::Warning);
        assert!(alerts[0].message.contains("command=bash -i"), "{}", alerts[0].message);
        assert!(alerts[0].has_tag("T1059.004"));
    }

    #[test]
    fn busybox_as_sh_alerts_busybox_as_ls_does_not() {
        let alerts = run(
            detect,
            [
                exec("/bin/busybox", ["sh", "-c", "id"]).container("c", "alpine"),
                exec("/bin/busybox", ["ls", "/"]).container("c", "alpine"),
            ],
        );
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn host_shells_and_entrypoints_and_other_binaries_do_not_alert() {
        let entrypoint = exec("/bin/sh", ["sh", "/entrypoint.sh"])
            .pid(4242)
            .container("db", "postgres")
            .with_container(|c| c.pid = 4242);
        let alerts = run(
            detect,
            [exec("/bin/bash", ["bash"]), entrypoint, exec("/usr/bin/python3", ["python3"]).container("web", "nginx")],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
