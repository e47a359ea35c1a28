//! Detection helpers: what a process is, as rules need to know it, beyond
//! what the event carries. In the prelude through [`ProcessExt`].
//!
//! ```ignore
//! use vigil_sdk::prelude::*;
//! # fn f(process: &Process) -> Option<()> {
//! if process.is_shell() {
//!     let script = process.shell_script()?; // `sh -c SCRIPT`
//! }
//! # None }
//! ```

use crate::{Process, Strings};

/// Program names of shells: the POSIX family, and csh, tcsh and fish.
pub const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "pdksh", "yash", "posh", "rbash", "csh", "tcsh", "fish"];

/// Multi-call binaries, whose applet is named by argv[0] or argv[1].
const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// A program name without its version suffix: `python3.11` → `python`,
/// `pip3` → `pip`.
pub fn strip_version(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
}

/// The file name of a path: what follows the last `/`.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a process is, for detections.
pub trait ProcessExt<'a> {
    /// The program's name as it thinks of itself: the executable's file
    /// name, except for multi-call binaries (busybox, toybox), where it is
    /// argv[0]'s file name, or argv[1] when invoked as `busybox APPLET ...`.
    fn program(&self) -> &'a str;
    /// The program's own arguments: after argv[0], and after the applet
    /// name for `busybox APPLET ...`.
    fn program_args(&self) -> std::iter::Skip<Strings<'a>>;
    /// True when the program is a shell ([`SHELLS`]).
    fn is_shell(&self) -> bool;
    /// For a shell run with a command string (`sh -c SCRIPT`, `bash -eo
    /// pipefail -c SCRIPT`, `sh -c -- SCRIPT`...), the script. `None` for
    /// other programs and for shells not given `-c`.
    fn shell_script(&self) -> Option<&'a str>;
}

impl<'a> ProcessExt<'a> for Process<'a> {
    fn program(&self) -> &'a str {
        program_and_args(self).0
    }

    fn program_args(&self) -> std::iter::Skip<Strings<'a>> {
        program_and_args(self).1
    }

    fn is_shell(&self) -> bool {
        SHELLS.contains(&self.program())
    }

    fn shell_script(&self) -> Option<&'a str> {
        if !self.is_shell() {
            return None;
        }
        let mut command_string = false;
        let mut args = self.program_args();
        while let Some(arg) = args.next() {
            match arg {
                "--" => break,
                // bash long options that take a value.
                "--rcfile" | "--init-file" => {
                    args.next();
                }
                a if a.starts_with("--") => {}
                a if a.len() > 1 && a.starts_with(['-', '+']) => {
                    let flags = &a[1..];
                    command_string |= a.starts_with('-') && flags.contains('c');
                    // Each `o` (set -o NAME) or `O` (bash shopt) in a group takes the next argument.
                    for _ in flags.chars().filter(|f| matches!(f, 'o' | 'O')) {
                        args.next();
                    }
                }
                operand => return command_string.then_some(operand),
            }
        }
        if command_string { args.next() } else { None }
    }
}

fn program_and_args<'a>(p: &Process<'a>) -> (&'a str, std::iter::Skip<Strings<'a>>) {
    let exe = p.exe_basename();
    if !MULTI_CALL.contains(&exe) {
        return (exe, p.argv().skip(1));
    }
    match basename(p.arg(0).unwrap_or("")) {
        applet if MULTI_CALL.contains(&applet) => (p.arg(1).map_or(exe, basename), p.argv().skip(2)),
        applet => (applet, p.argv().skip(1)),
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::packed::{BatchView, encode_batch};

    use super::*;
    use crate::testing::exec;

    fn exec_view<R>(exe: &str, argv: &[&str], f: impl FnOnce(Process<'_>) -> R) -> R {
        let e: vigil_event::Event = exec(exe, argv.iter().copied()).into();
        let mut buf = Vec::new();
        encode_batch([&e], &mut buf);
        let batch = BatchView::new(&buf).unwrap();
        f(batch.get(0).unwrap().process().unwrap())
    }

    #[test]
    fn shell_script_finds_the_command_string() {
        let script = |exe: &str, argv: &[&str]| exec_view(exe, argv, |p| p.shell_script().map(str::to_string));
        assert_eq!(script("/bin/sh", &["sh", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(
            script("/bin/bash", &["bash", "-eo", "pipefail", "-c", "curl x | sh"]).as_deref(),
            Some("curl x | sh")
        );
        assert_eq!(script("/bin/bash", &["bash", "-ec", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/bash", &["bash", "--rcfile", "/x", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/bash", &["bash", "--norc", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/sh", &["sh", "-c", "--", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/sh", &["sh", "-o", "errexit", "-c", "id", "name"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/busybox", &["sh", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/busybox", &["busybox", "sh", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/usr/bin/fish", &["fish", "-c", "id"]).as_deref(), Some("id"));
        assert_eq!(script("/bin/sh", &["sh", "/entrypoint.sh"]), None);
        assert_eq!(script("/bin/sh", &["sh"]), None);
        assert_eq!(script("/usr/bin/python3", &["python3", "-c", "print(1)"]), None);
    }

    #[test]
    fn program_sees_through_multi_call_binaries() {
        assert_eq!(exec_view("/bin/busybox", &["wget", "-q", "x"], |p| p.program().to_string()), "wget");
        assert_eq!(exec_view("/bin/busybox", &["busybox", "wget", "x"], |p| p.program().to_string()), "wget");
        assert_eq!(
            exec_view("/bin/busybox", &["busybox", "wget", "x"], |p| p.program_args().collect::<Vec<_>>().join(" ")),
            "x"
        );
        assert_eq!(exec_view("/usr/bin/wget", &["wget", "x"], |p| p.program().to_string()), "wget");
        assert!(exec_view("/bin/busybox", &["ash"], |p| p.is_shell()));
    }

    #[test]
    fn versions_are_stripped() {
        assert_eq!(strip_version("python3.11"), "python");
        assert_eq!(strip_version("pip3"), "pip");
        assert_eq!(basename("/usr/bin/id"), "id");
    }
}
