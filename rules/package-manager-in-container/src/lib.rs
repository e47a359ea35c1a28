//! Vigil rule `package-manager-in-container`: a package manager installing,
//! upgrading or removing software inside a running container (MITRE ATT&CK
//! T1505). Containers are built, not patched in place, so this is an intruder
//! fetching tools or a workload drifting from its image. Only the verbs that
//! change what is installed count (`apt-get install`, `apk add`, `rpm -Uvh`,
//! `pip install`...), and a container whose entrypoint is the package manager
//! itself (its first process) is not reported.

use vigil_sdk::prelude::*;
use vigil_sdk::strip_version;

/// A package manager changed the software installed in a running container.
#[rule(
    id = "package-manager-in-container",
    subscribe = [ProcessExec],
    containers_only = true,
    tags = ["container", "mitre_persistence", "T1505"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let container = event.container()?;
    let process = event.process()?;
    // Without a version suffix: `pip3.11` is `pip`.
    let tool = strip_version(process.program());
    if !changes_packages(tool, &process) || event.is_entrypoint() {
        return None;
    }
    Some(
        Alert::error(format!(
            "Package manager run in container (command={} container={} image={})",
            process.cmdline(),
            container.name(),
            container.image(),
        ))
        .field("package_manager", tool),
    )
}

/// True when `tool` run with `process`'s arguments installs, upgrades or removes packages.
fn changes_packages(tool: &str, process: &Process) -> bool {
    let verb = |verbs: &[&str]| process.args().any(|a| verbs.contains(&a));
    match tool {
        "apt" | "apt-get" | "aptitude" => {
            verb(&["install", "reinstall", "update", "upgrade", "dist-upgrade", "full-upgrade", "remove", "purge"])
        }
        "yum" | "dnf" | "microdnf" => {
            verb(&["install", "reinstall", "localinstall", "groupinstall", "update", "upgrade", "remove", "erase"])
        }
        "zypper" => verb(&["install", "in", "update", "up", "dist-upgrade", "dup", "remove", "rm"]),
        "apk" => verb(&["add", "upgrade", "del"]),
        "dpkg" => verb(&["-i", "--install", "--unpack"]),
        // -i/-U/-F and clusters such as -ivh, -Uvh (but not queries: -qi).
        "rpm" => process.args().any(|a| {
            a.starts_with("-i")
                || a.starts_with("-U")
                || a.starts_with("-F")
                || matches!(a, "--install" | "--upgrade" | "--freshen")
        }),
        "pip" | "gem" => verb(&["install"]),
        "npm" | "pnpm" => verb(&["install", "i", "add"]),
        "yarn" => verb(&["add", "install"]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    #[test]
    fn installs_in_a_container_alert() {
        let events = [
            exec("/usr/bin/apt-get", ["apt-get", "-y", "install", "nmap"]),
            exec("/usr/bin/apt", ["apt", "update"]),
            exec("/usr/bin/dpkg", ["dpkg", "-i", "tool.deb"]),
            exec("/usr/bin/yum", ["yum", "install", "-y", "gcc"]),
            exec("/usr/bin/microdnf", ["microdnf", "install", "socat"]),
            exec("/sbin/apk", ["apk", "add", "--no-cache", "curl"]),
            exec("/usr/bin/rpm", ["rpm", "-Uvh", "x.rpm"]),
            exec("/usr/bin/zypper", ["zypper", "--non-interactive", "in", "netcat"]),
            exec("/usr/local/bin/pip3.11", ["pip3", "install", "requests"]),
            exec("/usr/bin/npm", ["npm", "i", "-g", "miner"]),
            exec("/usr/bin/yarn", ["yarn", "add", "left-pad"]),
            exec("/usr/bin/gem", ["gem", "install", "evil"]),
        ];
        let n = events.len();
        let alerts = run(detect, events.map(|e| e.container("web", "nginx:1.25")));
        assert_eq!(alerts.len(), n, "{alerts:?}");
        assert_eq!(alerts[0].priority, Priority::Error);
        assert_eq!(
            alerts[0].message,
            "Package manager run in container (command=apt-get -y install nmap container=web image=nginx:1.25)"
        );
        assert_eq!(alerts[8].fields, [("package_manager".to_string(), "pip".to_string())]);
    }

    #[test]
    fn queries_host_runs_and_entrypoints_do_not_alert() {
        let entrypoint = exec("/usr/bin/pip", ["pip", "install", "-r", "requirements.txt"])
            .pid(4242)
            .container("init", "python:3.12")
            .entrypoint();
        let alerts = run(
            detect,
            [
                exec("/usr/bin/apt-get", ["apt-get", "install", "vim"]),
                entrypoint,
                exec("/usr/bin/rpm", ["rpm", "-qi", "bash"]).container("c", "fedora"),
                exec("/usr/bin/dpkg", ["dpkg", "-l"]).container("c", "debian"),
                exec("/usr/bin/apt", ["apt", "list", "--installed"]).container("c", "debian"),
                exec("/usr/bin/pip", ["pip", "freeze"]).container("c", "python"),
                exec("/usr/bin/npm", ["npm", "run", "build"]).container("c", "node"),
                exec("/sbin/apk", ["apk", "info"]).container("c", "alpine"),
            ],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
