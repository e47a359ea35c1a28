//! Live process events from the netlink process connector
//! (CONFIG_PROC_EVENTS), the source used where eBPF is not available.
//!
//! The connector says only "pid X exec'd / forked / exited"; everything else
//! (exe, argv, cwd, uid, cgroup, namespaces, ancestry) is read from /proc
//! when the message arrives. That is racy: a process that exits before we
//! read it yields an exec event with what could still be read (often only
//! the pid), and a process that execs again reports its newer image. The
//! eBPF source reads the same facts in the kernel, at the event, and has no
//! such gap. Listening needs CAP_NET_ADMIN before Linux 6.6 and nothing
//! since; without privileges, other users' `exe` and `cwd` links cannot be
//! read, so those fields stay empty for their processes.
//!
//! Each event's container and pod come from its /proc cgroup; the
//! [`Enricher`] adds the runtimes' descriptions and holds events of
//! containers not described yet, as for the eBPF source.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use vigil_event::{Event, EventKind, Process, Tty};

use super::{EventSender, Interest, Source, SourceError, Stop};
use crate::enrich::Enricher;
use crate::enrich::cgroups::Context;
use crate::proc::{ProcDir, ancestry, cgroup2_mount, exit_code};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
/// Most events sent in one batch.
const MAX_BATCH: usize = 256;

pub struct ProcSource {
    sock: Connector,
    cgroup2: Option<PathBuf>,
    enricher: Enricher,
}

impl ProcSource {
    /// Opens and subscribes the connector now, so that once the pipeline
    /// says it is running no exec is missed (and `auto` can fall back early).
    pub fn open(enricher: Enricher) -> Result<Self, SourceError> {
        let sock = Connector::open()
            .map_err(|e| SourceError::Unavailable("proc", format!("netlink process connector: {e}")))?;
        Ok(ProcSource { sock, cgroup2: cgroup2_mount(), enricher })
    }
}

impl Source for ProcSource {
    fn name(&self) -> &'static str {
        "proc"
    }

    fn run(self: Box<Self>, mut out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError> {
        let ProcSource { sock, cgroup2, mut enricher } = *self;
        let reader = ProcReader { cgroup2 };
        let mut buf = vec![0u8; 64 << 10];
        tracing::info!(
            "proc connector source started: exec facts are read from /proc after the event (a process gone by then \
             is reported with its pid only); /proc cannot tell an executable's overlayfs layer or a #! script, which \
             stay unset"
        );
        while !stop.is_stopped() {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    // Quiet: let go what waited long enough for its container.
                    let mut batch = Vec::new();
                    enricher.release_held(&mut batch);
                    if !batch.is_empty() && out.send_or_drop(batch).is_err() {
                        break;
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel dropped messages; it does not say how many.
                    out.report_lost(1);
                    continue;
                }
                Err(e) => return Err(SourceError::Io("proc connector recv", e)),
            };
            // One datagram is one event: take what else is already queued
            // (without waiting) so rules get batches, not single events.
            let mut batch = Vec::new();
            let mut datagram = n;
            loop {
                for msg in parse_messages(&buf[..datagram]) {
                    if let Some((event, ctx)) = reader.event(msg, &interest)
                        && let Some(event) = enricher.contextualize_as(&ctx, event)
                    {
                        enricher.take_released(&mut batch);
                        batch.push(event);
                    }
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
                match sock.recv_nowait(&mut buf) {
                    Ok(n) => datagram = n,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.report_lost(1),
                    Err(_) => break,
                }
            }
            enricher.release_held(&mut batch);
            if !batch.is_empty() && out.send_or_drop(batch).is_err() {
                break;
            }
        }
        let mut held = Vec::new();
        enricher.release_all(&mut held);
        if !held.is_empty() {
            let _ = out.send(held);
        }
        let _ = out.flush_lost();
        Ok(())
    }
}

/// One decoded connector message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcMsg {
    Exec { pid: u32, tgid: u32, ts: u64 },
    Fork { parent_tgid: u32, child_pid: u32, child_tgid: u32, ts: u64 },
    Exit { pid: u32, tgid: u32, status: u32, ts: u64 },
}

/// Decodes the netlink messages in one datagram; unknown ones are skipped.
pub fn parse_messages(mut buf: &[u8]) -> Vec<ProcMsg> {
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).map(|s| u32::from_ne_bytes(s.try_into().unwrap()));
    let u64_at = |b: &[u8], at: usize| b.get(at..at + 8).map(|s| u64::from_ne_bytes(s.try_into().unwrap()));
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let msg = &buf[NLMSG_HDRLEN..len];
        // cn_msg: idx, val, seq, ack, len(u16), flags(u16), then proc_event.
        if let (Some(CN_IDX_PROC), Some(CN_VAL_PROC)) = (u32_at(msg, 0), u32_at(msg, 4)) {
            let ev = &msg[CN_MSG_LEN.min(msg.len())..];
            let what = u32_at(ev, 0);
            let ts = u64_at(ev, 8).unwrap_or(0);
            let d = |i: usize| u32_at(ev, 16 + 4 * i);
            let parsed = match what {
                Some(PROC_EVENT_EXEC) => d(0).zip(d(1)).map(|(pid, tgid)| ProcMsg::Exec { pid, tgid, ts }),
                Some(PROC_EVENT_FORK) => match (d(1), d(2), d(3)) {
                    (Some(parent_tgid), Some(child_pid), Some(child_tgid)) => {
                        Some(ProcMsg::Fork { parent_tgid, child_pid, child_tgid, ts })
                    }
                    _ => None,
                },
                Some(PROC_EVENT_EXIT) => match (d(0), d(1), d(2)) {
                    (Some(pid), Some(tgid), Some(status)) => Some(ProcMsg::Exit { pid, tgid, status, ts }),
                    _ => None,
                },
                _ => None,
            };
            out.extend(parsed);
        }
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

/// Reads process details from /proc.
pub struct ProcReader {
    pub cgroup2: Option<PathBuf>,
}

impl ProcReader {
    /// The event of `msg` if a rule wants its kind, with the container and
    /// pod its cgroup names.
    fn event(&self, msg: ProcMsg, interest: &Interest) -> Option<(Event, Context)> {
        let (kind, ts) = match msg {
            ProcMsg::Exec { ts, .. } => (EventKind::ProcessExec, ts),
            ProcMsg::Fork { ts, .. } => (EventKind::ProcessFork, ts),
            ProcMsg::Exit { ts, .. } => (EventKind::ProcessExit, ts),
        };
        if !interest.wants(kind) {
            return None;
        }
        let time_ns = crate::time::monotonic_to_wall(ts);
        let mut event = Event { time_ns, ..Event::new(kind) };
        let mut ctx = Context::default();
        match msg {
            ProcMsg::Exec { pid, tgid, .. } => {
                let p;
                (p, ctx) = self.process_in(pid, tgid);
                event.process = Some(p);
            }
            ProcMsg::Fork { parent_tgid, child_pid, child_tgid, .. } => {
                if child_pid != child_tgid {
                    return None; // a new thread, not a new process
                }
                let mut p;
                (p, ctx) = self.process_in(child_pid, child_tgid);
                p.ppid = parent_tgid;
                event.process = Some(p);
            }
            ProcMsg::Exit { pid, tgid, status, .. } => {
                if pid != tgid {
                    return None; // a thread exiting
                }
                // Mostly gone already: what is known is the pid.
                event.process = Some(Process { pid, tgid, ..Default::default() });
                event.exit_code = Some(exit_code(status));
            }
        }
        Some((event, ctx))
    }

    /// Everything /proc still tells about `tgid`.
    #[cfg(test)]
    fn process(&self, pid: u32, tgid: u32) -> Process {
        self.process_in(pid, tgid).0
    }

    /// [`Self::process`], with its container and pod from the same read of
    /// its cgroup.
    fn process_in(&self, pid: u32, tgid: u32) -> (Process, Context) {
        let Some(dir) = ProcDir::open(tgid) else {
            return (Process { pid, tgid, ..Default::default() }, Context::default());
        };
        let (cgroup, v1_cgroups) = dir.cgroup_paths();
        let stat = dir.stat();
        let (uid, gid) = dir.ids().unwrap_or((0, 0));
        let (argv, argv_truncated) = dir.argv();
        let exe = dir.exe();
        let (login_uid, session_id) = dir.login();
        let mut p = Process {
            pid,
            tgid,
            ppid: stat.as_ref().map_or(0, |s| s.ppid),
            uid,
            gid,
            comm: stat.as_ref().map(|s| s.comm.clone()).unwrap_or_default(),
            exe_file: dir.exe_file(&exe),
            exe,
            argv,
            argv_truncated,
            cwd: dir.cwd(),
            start_time_ns: stat.as_ref().map_or(0, |s| s.start_ns),
            cgroup_id: cgroup.as_deref().map_or(0, |rel| self.cgroup_id(rel)),
            namespaces: dir.namespaces(),
            tty: stat.as_ref().and_then(|s| s.tty).map(|(major, minor)| Tty::of(major, minor, false)),
            login_uid,
            session_id,
            ..Default::default()
        };
        p.ancestry = ancestry(p.ppid);
        // The v2 cgroup's container, else (v1 and hybrid hosts) a v1 one's.
        let ctx = cgroup.as_deref().map(Context::of_path).filter(|c| c.container.is_some());
        let ctx = ctx.or_else(|| v1_cgroups.iter().map(|path| Context::of_path(path)).find(|c| c.container.is_some()));
        (p, ctx.unwrap_or_default())
    }

    /// The id (inode under the cgroup2 mount) of the cgroup at `rel`.
    fn cgroup_id(&self, rel: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Some(root) = &self.cgroup2 else { return 0 };
        std::fs::metadata(root.join(rel.trim_start_matches('/'))).map_or(0, |m| m.ino())
    }
}

/// The netlink socket, subscribed to process events.
struct Connector {
    fd: OwnedFd,
}

impl Connector {
    fn open() -> io::Result<Self> {
        // SAFETY: plain syscalls with valid arguments; the fd is owned below.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_CONNECTOR) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Wake up regularly to check for stop requests.
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        // SAFETY: tv is a valid timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            )
        };
        let bufsize: libc::c_int = 4 << 20;
        // SAFETY: bufsize is a valid int. Failure is fine (default size).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &bufsize as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        let c = Connector { fd };
        c.control(PROC_CN_MCAST_LISTEN)?;
        Ok(c)
    }

    fn control(&self, op: u32) -> io::Result<()> {
        let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&op.to_ne_bytes());
        // SAFETY: msg is a valid buffer of its length.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr() as *const libc::c_void, msg.len(), 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Like [`Connector::recv`], but returns `WouldBlock` instead of waiting.
    fn recv_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT)
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.control(PROC_CN_MCAST_IGNORE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nl(what: u32, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&77u64.to_ne_bytes()); // timestamp
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        let mut cn = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&ev);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + cn.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&[0u8; 12]);
        m.extend_from_slice(&cn);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn parses_exec_fork_exit_and_skips_junk() {
        let mut buf = nl(PROC_EVENT_EXEC, &[10, 10]);
        buf.extend(nl(PROC_EVENT_FORK, &[1, 1, 20, 20]));
        buf.extend(nl(PROC_EVENT_EXIT, &[30, 30, 256, 17, 1, 1]));
        buf.extend(nl(0x40, &[1, 2])); // uid change: ignored
        buf.extend_from_slice(&[1, 2, 3]); // trailing junk
        assert_eq!(
            parse_messages(&buf),
            [
                ProcMsg::Exec { pid: 10, tgid: 10, ts: 77 },
                ProcMsg::Fork { parent_tgid: 1, child_pid: 20, child_tgid: 20, ts: 77 },
                ProcMsg::Exit { pid: 30, tgid: 30, status: 256, ts: 77 },
            ]
        );
        // Lengths that lie never panic.
        let mut bad = nl(PROC_EVENT_EXEC, &[10, 10]);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_messages(&bad).is_empty());
        for cut in 0..buf.len() {
            let _ = parse_messages(&buf[..cut]);
        }
    }

    #[test]
    fn reads_this_process_from_proc() {
        let me = std::process::id();
        let p = ProcReader { cgroup2: cgroup2_mount() }.process(me, me);
        assert_eq!(p.tgid, me);
        assert!(
            p.exe.ends_with(&*std::env::current_exe().unwrap().file_name().unwrap().to_string_lossy())
                || p.exe.contains("deps"),
            "{}",
            p.exe
        );
        assert!(!p.argv.is_empty());
        assert!(!p.ancestry.is_empty() && p.ancestry[0].pid == p.ppid);
        assert!(p.namespaces.pid != 0 && p.namespaces.mnt != 0);
        assert!(p.start_time_ns > 0);
    }
}
