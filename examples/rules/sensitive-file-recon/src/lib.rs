//! Vigil rule `sensitive-file-recon`: a file reader (`cat`, `grep`, `tar`,
//! `base64`, a `python -c` one-liner...) run inside a container on a file
//! that holds credentials (MITRE ATT&CK T1552.001): the Kubernetes service
//! account token (also T1528), `/etc/shadow`, SSH private keys, kubeconfigs,
//! cloud and registry credentials, or PID 1's environment.

use vigil_sdk::prelude::*;
use vigil_sdk::strip_version;

const READERS: &[&str] = &[
    "cat", "tac", "nl", "head", "tail", "less", "more", "grep", "egrep", "fgrep", "strings", "xxd", "od", "hexdump",
    "base64", "dd", "cp", "tar", "awk", "gawk", "mawk", "sed",
];
/// Interpreters count when running inline code (`-c`, `-e`).
const INTERPRETERS: &[&str] = &["python", "perl", "ruby"];
const SERVICE_ACCOUNT: &[&str] =
    &["/var/run/secrets/kubernetes.io/serviceaccount", "/run/secrets/kubernetes.io/serviceaccount"];
const SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/root/.ssh",
    ".ssh/id_rsa",
    ".ssh/id_ed25519",
    ".ssh/id_ecdsa",
    "/etc/kubernetes/admin.conf",
    ".kube/config",
    "/proc/1/environ",
    ".aws/credentials",
    ".docker/config.json",
];

/// A credential or secret file was read inside a container.
#[rule(
    id = "sensitive-file-recon",
    subscribe = [ProcessExec],
    containers_only = true,
    tags = ["container", "mitre_credential_access", "T1552.001"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let container = event.container()?;
    let process = event.process()?;
    let name = process.program();
    let reader = READERS.contains(&name)
        || (INTERPRETERS.contains(&strip_version(name)) && process.args().any(|a| a == "-c" || a == "-e"));
    if !reader {
        return None;
    }
    let token = process.args().find_map(|a| SERVICE_ACCOUNT.iter().copied().find(|p| a.contains(p)));
    let path = token.or_else(|| {
        process.args().filter(|a| !a.ends_with(".pub")).find_map(|a| SECRETS.iter().copied().find(|p| a.contains(p)))
    })?;
    let alert = Alert::warning(format!(
        "Sensitive file {path} read in container (command={} container={} image={})",
        process.cmdline(),
        container.name(),
        container.image(),
    ))
    .field("matched_path", path);
    Some(if token.is_some() { alert.tag("T1528") } else { alert })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    #[test]
    fn reading_secrets_in_a_container_alerts() {
        let events = [
            exec("/bin/cat", ["cat", "/etc/shadow"]),
            exec("/bin/busybox", ["head", "-n1", "/root/.ssh/authorized_keys"]),
            exec("/bin/tar", ["tar", "czf", "/tmp/k.tgz", "/home/app/.ssh/id_ed25519"]),
            exec("/usr/bin/base64", ["base64", "-w0", "/root/.kube/config"]),
            exec("/usr/bin/strings", ["strings", "/proc/1/environ"]),
            exec("/bin/cp", ["cp", "/home/u/.aws/credentials", "/tmp/c"]),
            exec("/usr/bin/python3.12", ["python3", "-c", "print(open('/etc/gshadow').read())"]),
            exec("/bin/grep", ["grep", "auth", "/root/.docker/config.json"]),
        ];
        let n = events.len();
        let alerts = run(detect, events.map(|e| e.container("web", "nginx:1.25")));
        assert_eq!(alerts.len(), n, "{alerts:?}");
        assert_eq!(alerts[0].priority, Priority::Warning);
        assert_eq!(
            alerts[0].message,
            "Sensitive file /etc/shadow read in container (command=cat /etc/shadow container=web image=nginx:1.25)"
        );
        assert_eq!(alerts[3].fields, [("matched_path".to_string(), ".kube/config".to_string())]);
        assert!(!alerts[0].has_tag("T1528"));
    }

    #[test]
    fn service_account_token_is_tagged_t1528() {
        let alerts = run(
            detect,
            [exec("/bin/cat", ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"])
                .container("api", "api:2")
                .pod("api-0", "prod")],
        );
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].has_tag("T1528"));
        assert!(alerts[0].message.starts_with("Sensitive file /var/run/secrets/kubernetes.io/serviceaccount read"));
    }

    #[test]
    fn ordinary_reads_host_reads_and_other_programs_do_not_alert() {
        let in_container = [
            exec("/bin/cat", ["cat", "/etc/passwd"]),
            exec("/bin/cat", ["cat", "/root/.ssh/id_rsa.pub"]),
            exec("/usr/bin/ssh", ["ssh", "-i", "/root/.ssh/id_rsa", "host"]),
            exec("/usr/bin/python3", ["python3", "-c", "print('/etc/passwd')"]),
            exec("/bin/ls", ["ls", "/var/run/secrets/kubernetes.io/serviceaccount"]),
        ]
        .map(|e| e.container("web", "nginx"));
        let alerts = run(detect, in_container.into_iter().chain([exec("/bin/cat", ["cat", "/etc/shadow"])]));
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
