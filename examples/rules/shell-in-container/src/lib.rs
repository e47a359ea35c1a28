//! Vigil rule `shell-in-container`: an interactive or scripted shell started
//! inside a container, the first step of most hands-on-keyboard intrusions
//! (MITRE ATT&CK T1059.004). Shells a container's own entrypoint runs (the
//! container's first process) are not reported.

use vigil_sdk::prelude::*;

/// A shell was started inside a container.
#[rule(
    id = "shell-in-container",
    subscribe = [ProcessExec],
    containers_only = true,
    tags = ["container", "shell", "mitre_execution", "T1059.004"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let container = event.container()?;
    let process = event.process()?;
    // A container's entrypoint being a shell script is normal.
    // `is_shell` goes by the program, so a busybox or toybox applet goes by its own name.
    if !process.is_shell() || event.is_entrypoint() {
        return None;
    }
    Some(Alert::warning(format!(
        "Shell spawned in container (command={} container={} image={} parent={})",
        process.cmdline(),
        container.name(),
        container.image(),
        process.parent().map_or("?", |p| p.comm),
    )))
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
    }

    #[test]
    fn busybox_or_toybox_as_sh_alerts_as_ls_does_not() {
        let alerts = run(
            detect,
            [
                exec("/bin/busybox", ["sh", "-c", "id"]).container("c", "alpine"),
                exec("/bin/busybox", ["ls", "/"]).container("c", "alpine"),
                exec("/system/bin/toybox", ["sh"]).container("c", "android"),
                exec("/system/bin/toybox", ["ls"]).container("c", "android"),
            ],
        );
        assert_eq!(alerts.len(), 2, "{alerts:?}");
    }

    #[test]
    fn host_shells_and_entrypoints_and_other_binaries_do_not_alert() {
        let entrypoint = exec("/bin/sh", ["sh", "/entrypoint.sh"]).pid(4242).container("db", "postgres").entrypoint();
        let alerts = run(
            detect,
            [exec("/bin/bash", ["bash"]), entrypoint, exec("/usr/bin/python3", ["python3"]).container("web", "nginx")],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
