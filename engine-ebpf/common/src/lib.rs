//! The records Vigil's eBPF programs write into the ring buffer, the offsets
//! the daemon passes in before loading, and the indexes of the counter and
//! filter maps. Both sides include this crate, so a layout change is one
//! edit and a compile error on the side that did not follow.
//!
//! Every record starts with a [`Header`]; its `kind` says which record
//! follows. All records are `#[repr(C)]`, little-endian, and padded by hand
//! so that no field depends on the compiler's choice of padding.

#![no_std]

/// Record kinds (the `kind` of a [`Header`]), also the bit positions in the
/// filter mask.
pub mod kind {
    pub const EXEC: u32 = 0;
    pub const FORK: u32 = 1;
    pub const EXIT: u32 = 2;
    pub const CGROUP_MKDIR: u32 = 3;
    pub const CGROUP_RMDIR: u32 = 4;
    /// How many kinds there are.
    pub const COUNT: u32 = 5;
    /// Every kind.
    pub const ALL_MASK: u32 = (1 << COUNT) - 1;
}

/// Flags in the filter mask beside the kinds' bits.
pub mod filter {
    /// Fork records are wanted by the daemon's process tree alone (no rule
    /// subscribes to forks): the fork program reads only what the tree
    /// keeps (pid, tgid, parent, start time, cgroup). It skips uid, gid and
    /// comm (helpers on the current task, the parent) and the child's
    /// namespaces, pointer chains through a task just created, often cold
    /// in this CPU's cache. The record's header says so with
    /// [`super::header::BRIEF`].
    pub const FORK_BRIEF: u32 = 1 << 31;
}

/// Flags in a record's [`Header`].
pub mod header {
    /// The task's uid, gid, comm and namespaces were not read (zero): see
    /// [`super::filter::FORK_BRIEF`].
    pub const BRIEF: u32 = 1;
}

/// Indexes of the per-CPU counter map `COUNTERS`.
pub mod counter {
    /// Events of each kind the programs emitted or tried to (after the
    /// filter): `SEEN + kind`.
    pub const SEEN: u32 = 0;
    /// Events not delivered because the ring buffer was full.
    pub const LOST_RING_FULL: u32 = 5;
    /// Events not delivered because the task could not be read.
    pub const LOST_READ: u32 = 6;
    /// Size of the counter map.
    pub const COUNT: u32 = 7;
}

/// Bytes of `comm` (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of an exec's filename kept (a power of two).
pub const FILENAME_LEN: usize = 512;
/// Bytes of an exec's argv kept (a power of two); longer argv is cut and
/// flagged [`EXEC_ARGS_TRUNCATED`].
pub const ARGS_LEN: usize = 1024;
/// Bytes of a cgroup path kept.
pub const CGROUP_PATH_LEN: usize = 256;

/// `ExecEvent::flags`: argv was longer than [`ARGS_LEN`].
pub const EXEC_ARGS_TRUNCATED: u32 = 1;
/// `ExecEvent::flags`: the filename was longer than [`FILENAME_LEN`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// `ExecEvent::flags`: argv could not be read.
pub const EXEC_ARGS_UNREADABLE: u32 = 4;

/// Starts every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// [`header`] flags.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub boot_ns: u64,
}

/// What is known of a task at an exec or a fork.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Task {
    pub pid: u32,
    pub tgid: u32,
    /// The thread group id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    /// The id (inode number) of the task's cgroup v2 directory.
    pub cgroup_id: u64,
    /// When the task started, nanoseconds since boot.
    pub start_boot_ns: u64,
    /// Namespace inode numbers: pid (for children), mnt, net, uts, ipc,
    /// user, cgroup; 0 where unreadable.
    pub ns: [u32; 7],
    pub _pad2: u32,
    pub comm: [u8; COMM_LEN],
}

/// `sched_process_exec`: a successful execve.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: Header,
    pub task: Task,
    /// Bytes of `filename` used (without the NUL).
    pub filename_len: u32,
    /// Bytes of `args` used: NUL-separated arguments.
    pub args_len: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub _pad: u32,
    /// The path given to execve.
    pub filename: [u8; FILENAME_LEN],
    pub args: [u8; ARGS_LEN],
}

/// `sched_process_fork` of a new process (new threads are not reported).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: Header,
    /// The child.
    pub task: Task,
}

/// `sched_process_exit` of a thread group leader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: Header,
    pub pid: u32,
    pub tgid: u32,
    /// The raw wait status (`code << 8 | signal`).
    pub exit_code: u32,
    pub _pad: u32,
}

/// `cgroup_mkdir` / `cgroup_rmdir` on the cgroup v2 hierarchy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub header: Header,
    /// The cgroup's id (its kernfs inode number).
    pub id: u64,
    pub hierarchy_id: u32,
    pub level: u32,
    /// Bytes of `path` used (without the NUL).
    pub path_len: u32,
    pub _pad: u32,
    /// The path relative to the hierarchy's root, e.g. `/system.slice/docker-<id>.scope`.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// Byte offsets of the kernel struct fields the programs read, looked up in
/// the running kernel's BTF by the daemon and passed in as the global
/// `OFFSETS` (Rust eBPF has no CO-RE relocations). Field names say which
/// `struct`.`field` each is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_struct_pid: u32,
    pub task_struct_tgid: u32,
    pub task_struct_real_parent: u32,
    pub task_struct_mm: u32,
    pub task_struct_nsproxy: u32,
    pub task_struct_real_cred: u32,
    pub task_struct_start_boottime: u32,
    pub task_struct_exit_code: u32,
    pub mm_struct_arg_start: u32,
    pub mm_struct_arg_end: u32,
    pub linux_binprm_filename: u32,
    pub nsproxy_uts_ns: u32,
    pub nsproxy_ipc_ns: u32,
    pub nsproxy_mnt_ns: u32,
    pub nsproxy_pid_ns_for_children: u32,
    pub nsproxy_net_ns: u32,
    pub nsproxy_cgroup_ns: u32,
    pub uts_namespace_ns: u32,
    pub ipc_namespace_ns: u32,
    pub mnt_namespace_ns: u32,
    pub pid_namespace_ns: u32,
    pub net_ns: u32,
    pub cgroup_namespace_ns: u32,
    pub user_namespace_ns: u32,
    pub ns_common_inum: u32,
    pub cred_user_ns: u32,
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub kernfs_node_id: u32,
    pub cgroup_root_hierarchy_id: u32,
    /// Non-zero once filled in: programs emit nothing before.
    pub ready: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data of u32s, no padding, any bit pattern valid.
unsafe impl aya::Pod for Offsets {}

/// Size checks: the layout is part of the contract between the two sides.
const _: () = {
    assert!(core::mem::size_of::<Header>() == 16);
    assert!(core::mem::size_of::<Task>() == 88);
    assert!(core::mem::size_of::<ExecEvent>() == 16 + 88 + 16 + FILENAME_LEN + ARGS_LEN);
    assert!(core::mem::size_of::<ForkEvent>() == 104);
    assert!(core::mem::size_of::<ExitEvent>() == 32);
    assert!(core::mem::size_of::<CgroupEvent>() == 16 + 24 + CGROUP_PATH_LEN);
    assert!(core::mem::size_of::<Offsets>() == 32 * 4);
};
