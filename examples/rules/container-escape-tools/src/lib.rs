//! Vigil rule `container-escape-tools`: a tool for breaking out of a
//! container run inside one (MITRE ATT&CK T1611): `nsenter`, `unshare` and
//! `capsh` with any arguments, `chroot` into the host's root
//! (`/proc/1/root`, `/host...`), `mount` of `/proc/1/root` or of a host
//! disk, and a container runtime client (`docker`, `ctr`, `crictl`,
//! `kubectl`, ...) pointed at a runtime socket, asked to `exec`, or asked for
//! a `--privileged` container.

use vigil_sdk::prelude::*;

const RUNTIME_CLIENTS: &[&str] = &["docker", "podman", "nerdctl", "ctr", "crictl", "kubectl"];
const RUNTIME_SOCKETS: &[&str] = &["docker.sock", "containerd.sock", "crio.sock", "podman.sock"];
const HOST_DISKS: &[&str] = &["/dev/sd", "/dev/vd", "/dev/xvd", "/dev/nvme"];

/// A container escape tool was run inside a container.
#[rule(
    id = "container-escape-tools",
    subscribe = [ProcessExec],
    containers_only = true,
    tags = ["container", "mitre_privilege_escalation", "T1611"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let container = event.container()?;
    let process = event.process()?;
    let tool = process.program();
    let escapes = match tool {
        "nsenter" | "unshare" | "capsh" => true,
        "chroot" => process.args().any(|a| a.starts_with("/proc/1/root") || a.starts_with("/host")),
        "mount" => process.args().any(|a| a.starts_with("/proc/1/root") || HOST_DISKS.iter().any(|d| a.starts_with(d))),
        t if RUNTIME_CLIENTS.contains(&t) => {
            process.args().any(|a| a == "exec" || a == "--privileged" || RUNTIME_SOCKETS.iter().any(|s| a.contains(s)))
        }
        _ => false,
    };
    if !escapes {
        return None;
    }
    Some(
        Alert::critical(format!(
            "Container escape tool {tool} run in container (command={} container={} image={} privileged={})",
            process.cmdline(),
            container.name(),
            container.image(),
            container.privileged(),
        ))
        .field("tool", tool),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    #[test]
    fn escape_tools_in_a_container_alert() {
        let events = [
            exec("/usr/bin/nsenter", ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "bash"]),
            exec("/usr/bin/unshare", ["unshare", "-UrmC", "bash"]),
            exec("/sbin/capsh", ["capsh", "--print"]),
            exec("/usr/sbin/chroot", ["chroot", "/host", "bash"]),
            exec("/bin/busybox", ["chroot", "/proc/1/root", "sh"]),
            exec("/bin/mount", ["mount", "/dev/sda1", "/mnt"]),
            exec("/bin/mount", ["mount", "--bind", "/proc/1/root", "/mnt"]),
            exec("/usr/bin/docker", ["docker", "-H", "unix:///var/run/docker.sock", "ps"]),
            exec("/usr/bin/docker", ["docker", "run", "--privileged", "-v", "/:/host", "alpine"]),
            exec("/usr/bin/kubectl", ["kubectl", "exec", "-it", "api-0", "--", "sh"]),
            exec("/usr/bin/crictl", ["crictl", "exec", "-it", "abc", "sh"]),
        ];
        let n = events.len();
        let alerts = run(detect, events.map(|e| e.container("web", "nginx:1.25")));
        assert_eq!(alerts.len(), n, "{alerts:?}");
        assert_eq!(alerts[0].priority, Priority::Critical);
        assert_eq!(
            alerts[2].message,
            "Container escape tool capsh run in container (command=capsh --print container=web image=nginx:1.25 privileged=false)"
        );
        assert_eq!(alerts[4].fields, [("tool".to_string(), "chroot".to_string())]);
    }

    #[test]
    fn ordinary_use_and_host_use_do_not_alert() {
        let in_container = [
            exec("/usr/sbin/chroot", ["chroot", "/srv/jail", "sh"]),
            exec("/bin/mount", ["mount", "-t", "tmpfs", "tmpfs", "/mnt"]),
            exec("/bin/mount", ["mount"]),
            exec("/usr/bin/docker", ["docker", "ps"]),
            exec("/usr/bin/docker", ["docker", "build", "-t", "app", "."]),
            exec("/usr/bin/kubectl", ["kubectl", "get", "pods"]),
            exec("/usr/bin/ls", ["ls", "/proc/1/root"]),
        ]
        .map(|e| e.container("ci", "docker:dind"));
        let on_host = [
            exec("/usr/bin/nsenter", ["nsenter", "-t", "4242", "-n", "ip", "a"]),
            exec("/usr/bin/docker", ["docker", "exec", "-it", "web", "sh"]),
        ];
        let alerts = run(detect, in_container.into_iter().chain(on_host));
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
