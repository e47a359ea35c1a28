//! The exec record: its fixed part read in place, its data (filename,
//! argv, cwd and executable components) borrowed from the ring, and the
//! exec facts turned into the process's fields.

use vigil_ebpf_common::{
    EXEC_ARGS_TRUNCATED, EXEC_CWD_TRUNCATED, EXEC_CWD_UNREADABLE, EXEC_EXE_TRUNCATED, EXEC_EXE_UNREADABLE,
    EXEC_EXE_UPPER_LAYER, EXEC_LOGIN, EXEC_SCRIPT, EXEC_TTY, ExecEvent, TTY_DRIVER_TYPE_PTY, from_bytes,
};
use vigil_event::{ExeFile, Process, Tty};

/// An exec record read in place.
pub struct ExecRecord<'a> {
    pub event: ExecEvent,
    filename: &'a [u8],
    args: &'a [u8],
    cwd: &'a [u8],
    exe: &'a [u8],
}

impl<'a> ExecRecord<'a> {
    /// `None` when the bytes are shorter than the record says.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let event: ExecEvent = from_bytes(bytes)?;
        let mut data = &bytes[size_of::<ExecEvent>()..];
        let mut take = |len: u32| -> Option<&'a [u8]> {
            let (head, rest) = data.split_at_checked(len as usize)?;
            data = rest;
            Some(head)
        };
        Some(ExecRecord {
            filename: take(event.filename_len)?,
            args: take(event.args_len)?,
            cwd: take(event.cwd_len)?,
            exe: take(event.exe_len)?,
            event,
        })
    }

    fn flag(&self, flag: u32) -> bool {
        self.event.flags & flag != 0
    }

    /// Fills the exec's fields of `process` (which holds the task's).
    pub fn fill(&self, process: &mut Process) {
        let filename = String::from_utf8_lossy(self.filename).into_owned();
        let cwd = (!self.flag(EXEC_CWD_UNREADABLE)).then(|| path(self.cwd, self.flag(EXEC_CWD_TRUNCATED)));
        let exe = (!self.flag(EXEC_EXE_UNREADABLE)).then(|| path(self.exe, self.flag(EXEC_EXE_TRUNCATED)));
        let resolve = |p: String| match &cwd {
            Some(cwd) if !p.starts_with('/') => join(cwd, &p),
            _ => p,
        };
        process.exe = match exe {
            Some(exe) if !exe.is_empty() => exe,
            _ => {
                // The kernel's file could not be walked: the path given,
                // made absolute, else the kernel's view in /proc.
                let given = resolve(filename.clone());
                if given.starts_with('/') { given } else { crate::proc::exe_of(process.tgid) }
            }
        };
        if self.flag(EXEC_SCRIPT) {
            process.script = resolve(filename);
        }
        process.cwd = cwd.unwrap_or_default();
        process.cwd_truncated = self.flag(EXEC_CWD_TRUNCATED);
        let args = self.args.strip_suffix(&[0]).unwrap_or(self.args);
        if !args.is_empty() {
            process.argv = args.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        }
        process.argv_truncated = self.flag(EXEC_ARGS_TRUNCATED);

        let e = &self.event;
        let memfd = e.exe_nlink == 0 && process.exe.starts_with("/memfd:");
        process.exe_file = ExeFile {
            inode: e.exe_ino,
            device: (u64::from(e.exe_dev >> 20) << 32) | u64::from(e.exe_dev & 0xfffff),
            mode: e.exe_mode,
            upper_layer: self.flag(EXEC_EXE_UPPER_LAYER),
            memfd,
            unlinked: e.exe_nlink == 0 && e.exe_ino != 0 && !memfd,
        };
        if self.flag(EXEC_TTY) {
            process.tty = Some(Tty::of(e.tty_major, e.tty_minor, e.tty_driver_type == TTY_DRIVER_TYPE_PTY));
        }
        if self.flag(EXEC_LOGIN) {
            process.login_uid = Some(e.login_uid).filter(|u| *u != u32::MAX);
            process.session_id = Some(e.session_id).filter(|s| *s != u32::MAX);
        }
    }
}

/// A path from its components, leaf first, each NUL-terminated; a cut
/// path starts with `…/` where its root-most part was lost.
fn path(components: &[u8], truncated: bool) -> String {
    let mut out = String::with_capacity(components.len() + 4);
    if truncated {
        out.push('…');
    }
    let parts = components.strip_suffix(&[0]).unwrap_or(components);
    if parts.is_empty() {
        if !truncated {
            out.push('/');
        }
        return out;
    }
    for part in parts.rsplit(|b| *b == 0) {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(part));
    }
    out
}

/// `rel` (relative, as given to execve) under `dir`, with `.` and `..` folded.
fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_leaf_first_become_a_path() {
        assert_eq!(path(b"bin\0usr\0", false), "/usr/bin");
        assert_eq!(path(b"", false), "/");
        assert_eq!(path(b"memfd:x\0", false), "/memfd:x");
        assert_eq!(path(b"deep\0", true), "…/deep");
    }

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(join("/work/app", "./run.sh"), "/work/app/run.sh");
        assert_eq!(join("/work/app", "../bin/x"), "/work/bin/x");
        assert_eq!(join("/", "x"), "/x");
    }
}
