//! User and group names: an exec's uid, gid and login uid resolved in the
//! process's own /etc/passwd and /etc/group (its container's, for a
//! container process; never the host's), read through its root directory
//! (`/proc/<pid>/root`).
//!
//! The files are the container's to write, so they are read as hostile
//! input: opened with `openat2(RESOLVE_IN_ROOT)` (a symlink such as
//! `/etc/passwd -> /etc/shadow` resolves inside the container's root, never
//! the host's), non-blocking and only if a regular file (a FIFO cannot
//! stall the source), at most [`MAX_FILE`] bytes and [`MAX_NAMES`] entries a
//! file, and 262,144 names across all namespaces.
//! Parsed tables are cached per mount namespace and re-read when a file
//! changes (its inode, size or mtime): checked once a second per
//! namespace, and when an id is not found, at most every millisecond (a
//! user added just before it runs something is named, and a container's
//! first execs, which can come before its root is in place, are named once
//! it is).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use vigil_event::Process;

/// Files larger than this are not read (their names stay unknown).
pub const MAX_FILE: u64 = 4 << 20;
/// Entries kept per file at most.
pub const MAX_NAMES: usize = 16_384;
/// Mount namespaces cached at most (the cache starts over past it).
const MAX_NAMESPACES: usize = 1024;
/// Names kept across every namespace at most (some 10-15 MiB): hostile
/// containers with huge files cannot grow the daemon past it; past it,
/// the other namespaces' caches start over.
const MAX_TOTAL_NAMES: usize = 262_144;
/// How often a namespace's files are checked for changes.
const RECHECK_NS: u64 = 1_000_000_000;
/// How often, at most, an id not found has them checked (an unchanged
/// check costs ~5 µs: at most 0.5% of a CPU per namespace).
const RECHECK_MISS_NS: u64 = 1_000_000;

/// The names of each mount namespace's users and groups.
#[derive(Default)]
pub struct UserNames {
    by_mnt: HashMap<u64, Names>,
}

#[derive(Default)]
struct Names {
    passwd: Table,
    group: Table,
    checked_ns: u64,
    /// The last process read through: another process of the namespace,
    /// for when the event's own is gone.
    reader: u32,
}

/// One file's id → name table, with what identifies its version.
#[derive(Default)]
struct Table {
    stamp: Option<(u64, u64, i64, i64)>,
    names: HashMap<u32, Arc<str>>,
}

impl UserNames {
    /// Sets `user`, `group` and `login_user` of `p` (left empty where not found).
    pub fn fill(&mut self, p: &mut Process, now_ns: u64) {
        if self.by_mnt.len() >= MAX_NAMESPACES && !self.by_mnt.contains_key(&p.namespaces.mnt) {
            self.by_mnt.clear();
        }
        let mnt = p.namespaces.mnt;
        let names = self.by_mnt.entry(mnt).or_default();
        let since = now_ns.saturating_sub(names.checked_ns);
        let missing = !names.passwd.names.contains_key(&p.uid)
            || !names.group.names.contains_key(&p.gid)
            || p.login_uid.is_some_and(|u| !names.passwd.names.contains_key(&u));
        if names.checked_ns == 0 || since >= RECHECK_NS || (missing && since >= RECHECK_MISS_NS) {
            // The process may be gone already: then its parent, or the
            // last process read through, if still in the same namespace (a
            // `docker exec`'s parent is the runtime's shim, on the host).
            for pid in [p.tgid, p.ppid, names.reader] {
                if names.refresh(pid, mnt) {
                    names.checked_ns = now_ns;
                    names.reader = pid;
                    break;
                }
            }
            let total: usize = self.by_mnt.values().map(|n| n.passwd.names.len() + n.group.names.len()).sum();
            if total > MAX_TOTAL_NAMES {
                self.by_mnt.retain(|ns, _| *ns == mnt);
            }
        }
        let Some(names) = self.by_mnt.get(&mnt) else { return };
        let name = |t: &Table, id: u32| t.names.get(&id).map(|n| n.to_string()).unwrap_or_default();
        p.user = name(&names.passwd, p.uid);
        p.group = name(&names.group, p.gid);
        p.login_user = p.login_uid.map(|u| name(&names.passwd, u)).unwrap_or_default();
    }
}

impl Names {
    /// Re-reads what changed under the root of `pid`; false when its root
    /// cannot be opened or it is not in the mount namespace `mnt` (0: any).
    fn refresh(&mut self, pid: u32, mnt: u64) -> bool {
        use std::os::unix::fs::MetadataExt;
        if pid == 0 {
            return false;
        }
        if mnt != 0 && std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map_or(true, |m| m.ino() != mnt) {
            return false;
        }
        let Ok(root) = rustix::fs::open(
            format!("/proc/{pid}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return false;
        };
        self.passwd.refresh(&root, "etc/passwd", 2);
        self.group.refresh(&root, "etc/group", 2);
        true
    }
}

impl Table {
    /// Re-reads `path` under `root` if it changed; `id_field` is the
    /// colon-separated field holding the id (the name is field 0).
    fn refresh(&mut self, root: &std::os::fd::OwnedFd, path: &str, id_field: usize) {
        let Ok(fd) = rustix::fs::openat2(
            root,
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) else {
            *self = Table::default();
            return;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else { return };
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        let stamp = (st.st_ino, st.st_size as u64, st.st_mtime, st.st_mtime_nsec as i64);
        if self.stamp == Some(stamp) {
            return;
        }
        self.stamp = Some(stamp);
        self.names.clear();
        if !regular || stamp.1 > MAX_FILE {
            return;
        }
        let mut text = Vec::new();
        if std::fs::File::from(fd).take(MAX_FILE).read_to_end(&mut text).is_err() {
            return;
        }
        self.names = parse(&String::from_utf8_lossy(&text), id_field);
    }
}

/// `name:...:id:...` lines to id → name (the first name of an id wins, as
/// getpwuid gives it).
fn parse(text: &str, id_field: usize) -> HashMap<u32, Arc<str>> {
    let mut names = HashMap::new();
    for line in text.lines() {
        if names.len() >= MAX_NAMES {
            break;
        }
        let mut fields = line.split(':');
        let Some(name) = fields.next().filter(|n| !n.is_empty() && !n.starts_with('#')) else { continue };
        let Some(id) = fields.nth(id_field - 1).and_then(|f| f.trim().parse::<u32>().ok()) else { continue };
        names.entry(id).or_insert_with(|| Arc::from(name));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group_lines() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nwww:x:33:33::/:/sbin/nologin\ndup:x:33:1::/:\n";
        let t = parse(passwd, 2);
        assert_eq!((&*t[&0], &*t[&33], t.len()), ("root", "www", 2));
        let g = parse("root:x:0:\nstaff:x:50:alice,bob\n", 2);
        assert_eq!(&*g[&50], "staff");
    }

    #[test]
    fn a_huge_file_is_cut_at_its_cap() {
        let text: String = (0..MAX_NAMES as u32 + 100).map(|i| format!("u{i}:x:{i}:{i}::/:/bin/sh\n")).collect();
        assert_eq!(parse(&text, 2).len(), MAX_NAMES);
    }

    #[test]
    fn names_this_process_from_its_own_root() {
        let me = std::process::id();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let Some(root_name) = parse(&passwd, 2).get(&0).cloned() else {
            eprintln!("skipped: this machine's /etc/passwd names no uid 0");
            return;
        };
        let mnt = std::fs::metadata("/proc/self/ns/mnt").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0);
        let mut p = Process { tgid: me, uid: 0, gid: 0, login_uid: Some(0), ..Default::default() };
        p.namespaces.mnt = mnt;
        let mut names = UserNames::default();
        names.fill(&mut p, 1);
        assert_eq!((p.user.as_str(), p.login_user.as_str()), (&*root_name, &*root_name));
        // A process that is gone, in a namespace never seen: nothing, no error.
        let mut gone = Process { tgid: u32::MAX - 1, ppid: u32::MAX - 2, ..Default::default() };
        gone.namespaces.mnt = 1;
        names.fill(&mut gone, 2);
        assert!(gone.user.is_empty());
    }
}
