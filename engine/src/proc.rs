//! What /proc tells about a process and the host's mounts, read with the
//! `procfs` crate: used by the process tree's start-up scan, the eBPF
//! source (brief forks, relative exec paths) and the proc connector source.
//! Every reader returns what it could read; a process that is gone reads as
//! `None` or empty, never as an error.

use std::path::PathBuf;

use procfs::process::Process as ProcProcess;
use vigil_event::{Ancestor, ExeFile, Namespaces};

/// argv is cut at this many bytes (as the eBPF source cuts it).
pub const MAX_ARGV_BYTES: usize = 4096;

/// Ancestors read per process at most.
pub const MAX_ANCESTRY: usize = 8;

/// A process's /proc directory, opened once for several reads.
pub struct ProcDir(ProcProcess);

/// The fields of `stat` Vigil uses.
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// Start time since boot, in ns.
    pub start_ns: u64,
    /// The controlling terminal's (major, minor); `None` without one.
    pub tty: Option<(u32, u32)>,
}

impl ProcDir {
    /// `/proc/<pid>`, if the process still exists.
    pub fn open(pid: u32) -> Option<Self> {
        ProcProcess::new(i32::try_from(pid).ok()?).ok().map(ProcDir)
    }

    pub fn stat(&self) -> Option<Stat> {
        let s = self.0.stat().ok()?;
        let tty = (s.tty_nr != 0).then(|| {
            let (major, minor) = s.tty_nr();
            (major as u32, minor as u32)
        });
        Some(Stat { comm: s.comm, ppid: s.ppid.max(0) as u32, start_ns: ticks_to_ns(s.starttime), tty })
    }

    /// The real uid and gid.
    pub fn ids(&self) -> Option<(u32, u32)> {
        let s = self.0.status().ok()?;
        Some((s.ruid, s.rgid))
    }

    /// argv, cut at [`MAX_ARGV_BYTES`] (true when cut); bytes that are not
    /// UTF-8 are replaced.
    pub fn argv(&self) -> (Vec<String>, bool) {
        // Read raw: the crate's `cmdline()` has no size bound.
        let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", self.0.pid)) else { return (Vec::new(), false) };
        split_argv(&raw)
    }

    /// The executable's path (empty when unreadable).
    pub fn exe(&self) -> String {
        self.0.exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The working directory (empty when unreadable).
    pub fn cwd(&self) -> String {
        self.0.cwd().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The audit login uid and session id (`None` when unset or the
    /// kernel keeps none).
    pub fn login(&self) -> (Option<u32>, Option<u32>) {
        let set = |v: u32| Some(v).filter(|v| *v != u32::MAX);
        let session = std::fs::read_to_string(format!("/proc/{}/sessionid", self.0.pid)).ok();
        (self.0.loginuid().ok().and_then(set), session.and_then(|s| s.trim().parse().ok()).and_then(set))
    }

    /// The executed file as the kernel holds it (`/proc/<pid>/exe` is the
    /// open file, so a deleted file or a memfd still stats). /proc cannot
    /// tell an overlayfs upper layer: `upper_layer` stays false.
    pub fn exe_file(&self, exe: &str) -> ExeFile {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(format!("/proc/{}/exe", self.0.pid)) else { return ExeFile::default() };
        let memfd = exe.starts_with("/memfd:");
        let device = (u64::from(libc::major(m.dev())) << 32) | u64::from(libc::minor(m.dev()));
        ExeFile {
            inode: m.ino(),
            device,
            mode: m.mode(),
            upper_layer: false,
            memfd,
            unlinked: m.nlink() == 0 && !memfd,
        }
    }

    /// The process's cgroup v2 path (the hierarchy-0 line of `cgroup`) and
    /// its v1 paths (one per v1 hierarchy, in the file's order).
    pub fn cgroup_paths(&self) -> (Option<String>, Vec<String>) {
        let Ok(groups) = self.0.cgroups() else { return (None, Vec::new()) };
        let (v2, v1): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| g.hierarchy == 0);
        (v2.into_iter().next().map(|g| g.pathname), v1.into_iter().map(|g| g.pathname).collect())
    }

    /// Its namespaces' inode numbers (0 for those unreadable).
    pub fn namespaces(&self) -> Namespaces {
        let Ok(ns) = self.0.namespaces() else { return Namespaces::default() };
        let ino = |name: &str| ns.0.get(std::ffi::OsStr::new(name)).map_or(0, |n| n.identifier);
        Namespaces {
            pid: ino("pid"),
            mnt: ino("mnt"),
            net: ino("net"),
            uts: ino("uts"),
            ipc: ino("ipc"),
            user: ino("user"),
            cgroup: ino("cgroup"),
        }
    }
}

/// argv from the bytes of a `cmdline` file, cut at [`MAX_ARGV_BYTES`].
fn split_argv(raw: &[u8]) -> (Vec<String>, bool) {
    let truncated = raw.len() > MAX_ARGV_BYTES;
    let raw = &raw[..raw.len().min(MAX_ARGV_BYTES)];
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return (Vec::new(), truncated);
    }
    (raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect(), truncated)
}

/// The pids in /proc now.
pub fn pids() -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(|p| p.ok()).filter_map(|p| u32::try_from(p.pid).ok()).collect()
}

/// The executable of `pid` (empty when unreadable): one readlink, for the
/// exec path, where opening the process's directory first would cost more.
pub fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether `pid` still exists.
pub fn exists(pid: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// `pid`'s ancestors from /proc, parent first, up to [`MAX_ANCESTRY`],
/// stopping at pid 0.
pub fn ancestry(mut pid: u32) -> Vec<Ancestor> {
    let mut out = Vec::new();
    while pid != 0 && out.len() < MAX_ANCESTRY {
        let Some(dir) = ProcDir::open(pid) else { break };
        let Some(stat) = dir.stat() else { break };
        let (argv, _) = dir.argv();
        out.push(Ancestor { pid, comm: stat.comm.into(), exe: dir.exe().into(), argv: argv.into() });
        pid = stat.ppid;
    }
    out
}

/// Clock ticks (as `stat` counts them) to nanoseconds, without overflowing
/// on long uptimes.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| procfs::ticks_per_second().max(1));
    (ticks / hz).saturating_mul(1_000_000_000).saturating_add(ticks % hz * 1_000_000_000 / hz)
}

/// Exit status as a shell reports it: the code, or 128+signal.
pub fn exit_code(status: u32) -> i32 {
    let sig = status & 0x7f;
    if sig == 0 { ((status >> 8) & 0xff) as i32 } else { 128 + sig as i32 }
}

/// This process's mounts, from /proc/self/mountinfo.
pub fn mounts() -> Vec<procfs::process::MountInfo> {
    match ProcProcess::myself().and_then(|me| me.mountinfo()) {
        Ok(m) => m.0,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /proc/self/mountinfo");
            Vec::new()
        }
    }
}

/// The mount point of the first mount of type `fs_type`.
pub fn mount_point_of(fs_type: &str) -> Option<PathBuf> {
    first_of(&mounts(), &[fs_type])
}

/// The mount point of the first of `mounts` whose type is one of `types`.
pub fn first_of(mounts: &[procfs::process::MountInfo], types: &[&str]) -> Option<PathBuf> {
    mounts.iter().find(|m| types.contains(&m.fs_type.as_str())).map(|m| m.mount_point.clone())
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_point_of("cgroup2")
}

/// The mounts described by `text` in mountinfo's format (for tests and
/// for callers that read another process's table).
pub fn parse_mountinfo(text: &str) -> Vec<procfs::process::MountInfo> {
    use procfs::FromBufRead;
    procfs::process::MountInfos::from_buf_read(text.as_bytes()).map(|m| m.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_do_not_overflow() {
        let hz = procfs::ticks_per_second();
        let century = 100 * 365 * 86_400u64;
        assert_eq!(ticks_to_ns(century * hz), century * 1_000_000_000);
        assert_eq!(ticks_to_ns(hz / 2), 500_000_000);
        assert_eq!(ticks_to_ns(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn exit_codes_read_like_a_shell() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
    }

    #[test]
    fn argv_is_cut_and_split() {
        assert_eq!(split_argv(b"ls\0-l\0"), (vec!["ls".to_string(), "-l".to_string()], false));
        assert_eq!(split_argv(b""), (vec![], false));
        let long = vec![b'a'; MAX_ARGV_BYTES + 10];
        let (argv, cut) = split_argv(&long);
        assert!(cut);
        assert_eq!(argv[0].len(), MAX_ARGV_BYTES);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcDir::open(std::process::id()).expect("own /proc entry");
        let stat = me.stat().unwrap();
        assert!(!stat.comm.is_empty());
        assert!(stat.ppid > 0);
        assert!(me.ids().is_some());
        assert!(!me.argv().0.is_empty());
        assert!(me.exe().starts_with('/'));
        assert_ne!(me.namespaces().pid, 0);
        assert!(pids().contains(&std::process::id()));
    }

    #[test]
    fn mount_points_by_type() {
        let info = "22 28 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
                    30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let mounts = parse_mountinfo(info);
        assert_eq!(first_of(&mounts, &["cgroup2"]), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(first_of(&mounts, &["tracefs"]), None);
        assert!(parse_mountinfo("garbage\n").is_empty());
    }
}
