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
    /// A process changed namespaces (setns or unshare succeeded).
    pub const NAMESPACES: u32 = 5;
    /// How many kinds there are.
    pub const COUNT: u32 = 6;
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
    pub const LOST_RING_FULL: u32 = super::kind::COUNT;
    /// Events not delivered because the task could not be read.
    pub const LOST_READ: u32 = super::kind::COUNT + 1;
    /// Size of the counter map.
    pub const COUNT: u32 = super::kind::COUNT + 2;
}

/// Bytes of `comm` (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of an exec's filename kept (a power of two).
pub const FILENAME_LEN: usize = 512;
/// Bytes of an exec's argv kept (a power of two); longer argv is cut and
/// flagged [`EXEC_ARGS_TRUNCATED`].
pub const ARGS_LEN: usize = 1024;
/// Bytes of a path (cwd, executable) kept: its components, leaf first,
/// each NUL-terminated; a longer path is cut at the root's end and flagged.
pub const PATH_LEN: usize = 512;
/// Bytes of one path component read (the kernel's NAME_MAX + NUL).
pub const NAME_LEN: usize = 256;
/// Most path components walked (mount crossings count as one).
pub const PATH_DEPTH: usize = 32;
/// Bytes of a cgroup path kept.
pub const CGROUP_PATH_LEN: usize = 256;

/// `ExecEvent::flags`: argv was longer than [`ARGS_LEN`].
pub const EXEC_ARGS_TRUNCATED: u32 = 1;
/// `ExecEvent::flags`: the filename was longer than [`FILENAME_LEN`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// `ExecEvent::flags`: argv could not be read.
pub const EXEC_ARGS_UNREADABLE: u32 = 4;
/// `ExecEvent::flags`: the cwd's root-most components were cut.
pub const EXEC_CWD_TRUNCATED: u32 = 8;
/// `ExecEvent::flags`: the executable's root-most components were cut.
pub const EXEC_EXE_TRUNCATED: u32 = 16;
/// `ExecEvent::flags`: the cwd could not be read.
pub const EXEC_CWD_UNREADABLE: u32 = 32;
/// `ExecEvent::flags`: the executed file could not be read.
pub const EXEC_EXE_UNREADABLE: u32 = 64;
/// `ExecEvent::flags`: a script started through its `#!` line: the
/// filename is the script, the executable its interpreter.
pub const EXEC_SCRIPT: u32 = 128;
/// `ExecEvent::flags`: the executable is on an overlayfs upper layer
/// (written or changed after the overlay was mounted).
pub const EXEC_EXE_UPPER_LAYER: u32 = 256;
/// `ExecEvent::flags`: the task has a controlling terminal (`tty_*` set).
pub const EXEC_TTY: u32 = 512;
/// `ExecEvent::flags`: the kernel keeps login identities (CONFIG_AUDIT):
/// `login_uid` and `session_id` are read.
pub const EXEC_LOGIN: u32 = 1024;

/// The kernel's `TTY_DRIVER_TYPE_PTY`.
pub const TTY_DRIVER_TYPE_PTY: u32 = 4;
/// overlayfs's superblock magic.
pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

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
    /// The id of its cgroup in the cgroup v1 hierarchy the daemon chose
    /// ([`Offsets::cgroup_v1_hierarchy`]), read at exec only (a fork's is
    /// its parent's); 0 when none was chosen (v2-only hosts), unreadable, or
    /// in a fork record.
    pub cgroup_v1_id: u64,
    /// When the task started, nanoseconds since boot.
    pub start_boot_ns: u64,
    /// Namespace inode numbers: pid (for children), mnt, net, uts, ipc,
    /// user, cgroup; 0 where unreadable.
    pub ns: [u32; 7],
    pub _pad2: u32,
    pub comm: [u8; COMM_LEN],
}

/// `sched_process_exec`: a successful execve. The record is this fixed
/// part followed by `filename_len + args_len + cwd_len + exe_len` bytes of
/// data, in that order: only what is used crosses the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub header: Header,
    pub task: Task,
    /// Bytes of the filename given to execve (without a NUL).
    pub filename_len: u32,
    /// Bytes of argv: NUL-separated arguments.
    pub args_len: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Bytes of the working directory's components, leaf first, each
    /// NUL-terminated, up to the task's root.
    pub cwd_len: u32,
    /// Bytes of the executed file's components (`bprm->file`, what the
    /// kernel maps, not the path string), as for `cwd_len`.
    pub exe_len: u32,
    /// The audit login uid (`u32::MAX`: unset), with [`EXEC_LOGIN`].
    pub login_uid: u32,
    /// The audit session id (`u32::MAX`: unset), with [`EXEC_LOGIN`].
    pub session_id: u32,
    /// The controlling terminal's major and minor (with [`EXEC_TTY`]).
    pub tty_major: u32,
    pub tty_minor: u32,
    /// Its driver's type (`TTY_DRIVER_TYPE_*`).
    pub tty_driver_type: u32,
    /// The executed file's mode bits (type, setuid, setgid, permissions).
    pub exe_mode: u32,
    /// Its link count: 0 for a deleted file or a memfd.
    pub exe_nlink: u32,
    /// Its inode number.
    pub exe_ino: u64,
    /// The device of its filesystem (the kernel's dev_t: major << 20 | minor).
    pub exe_dev: u32,
    pub _pad: u32,
    /// Its filesystem's magic number (e.g. [`OVERLAYFS_SUPER_MAGIC`]).
    pub exe_fs_magic: u64,
}

/// Bytes of data after an [`ExecEvent`] at most.
pub const EXEC_DATA_MAX: usize = FILENAME_LEN + ARGS_LEN + 2 * PATH_LEN;
/// The per-CPU scratch buffer an exec record is built in: the data area is
/// twice the most used, so that every write at an offset masked with
/// [`EXEC_DATA_MASK`] stays inside it (what the verifier checks).
pub const EXEC_DATA_AREA: usize = 8192;
/// Mask for offsets into the data area.
pub const EXEC_DATA_MASK: usize = 4095;

/// The exec record as built, before only its used part is output.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecScratch {
    pub event: ExecEvent,
    pub data: [u8; EXEC_DATA_AREA],
    /// A path walk's component name pointers, then how it ended (not output).
    pub names: [u64; PATH_DEPTH + 1],
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

/// A successful `setns(2)` or `unshare(2)`: the task's namespaces after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NamespacesEvent {
    pub header: Header,
    pub pid: u32,
    pub tgid: u32,
    /// As [`Task::ns`].
    pub ns: [u32; 7],
    /// [`NS_SETNS`] or [`NS_UNSHARE`].
    pub how: u32,
}

/// `NamespacesEvent::how`: joined another process's namespaces.
pub const NS_SETNS: u32 = 1;
/// `NamespacesEvent::how`: made new ones.
pub const NS_UNSHARE: u32 = 2;

/// `cgroup_mkdir` / `cgroup_rmdir` on the cgroup v2 hierarchy (`hierarchy_id`
/// 0) or on the v1 hierarchy the daemon chose.
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
    pub linux_binprm_file: u32,
    pub linux_binprm_interp: u32,
    pub task_struct_fs: u32,
    pub task_struct_signal: u32,
    /// 0 when the kernel has no audit support (no `loginuid`).
    pub task_struct_loginuid: u32,
    pub task_struct_sessionid: u32,
    pub fs_struct_root: u32,
    pub fs_struct_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_name: u32,
    pub vfsmount_mnt_root: u32,
    /// Where `struct mount` holds its `struct vfsmount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub inode_i_nlink: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    pub super_block_s_magic: u32,
    /// From an overlayfs inode to its upper dentry (`ovl_inode.__upperdentry
    /// - ovl_inode.vfs_inode`); 0 when unknown.
    pub ovl_inode_upperdentry: u32,
    pub signal_struct_tty: u32,
    pub tty_struct_index: u32,
    pub tty_struct_driver: u32,
    pub tty_driver_major: u32,
    pub tty_driver_minor_start: u32,
    pub tty_driver_type: u32,
    pub task_struct_cgroups: u32,
    /// Where `struct css_set` holds the chosen v1 controller's state
    /// (`subsys[<controller>_cgrp_id]`).
    pub css_set_v1_subsys: u32,
    pub cgroup_subsys_state_cgroup: u32,
    /// Not an offset: the cgroup v1 hierarchy whose cgroup ids tasks carry
    /// and whose mkdir/rmdir is reported (its `hierarchy_id`, as in
    /// /proc/cgroups); 0: none (tasks carry their v2 id only).
    pub cgroup_v1_hierarchy: u32,
    /// Non-zero once filled in: programs emit nothing before.
    pub ready: u32,
}

/// A record of type `T` from the start of `bytes`; `None` when too short.
/// For the daemon's side, where records arrive as bytes.
#[cfg(feature = "user")]
pub fn from_bytes<T: Copy + Records>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked; every `Records` type is a plain
    // `#[repr(C)]` record of integers and byte arrays, valid for any bit
    // pattern.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// The record types (plain data, any bit pattern valid).
#[cfg(feature = "user")]
pub trait Records {}
#[cfg(feature = "user")]
impl Records for Header {}
#[cfg(feature = "user")]
impl Records for ExecEvent {}
#[cfg(feature = "user")]
impl Records for ForkEvent {}
#[cfg(feature = "user")]
impl Records for ExitEvent {}
#[cfg(feature = "user")]
impl Records for CgroupEvent {}
#[cfg(feature = "user")]
impl Records for NamespacesEvent {}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data of u32s, no padding, any bit pattern valid.
unsafe impl aya::Pod for Offsets {}

/// Size checks: the layout is part of the contract between the two sides.
const _: () = {
    assert!(core::mem::size_of::<Header>() == 16);
    assert!(core::mem::size_of::<Task>() == 96);
    assert!(core::mem::size_of::<ExecEvent>() == 16 + 96 + 48 + 24);
    assert!(EXEC_DATA_MAX <= EXEC_DATA_MASK + 1 && EXEC_DATA_MASK + 1 + ARGS_LEN <= EXEC_DATA_AREA);
    assert!(core::mem::size_of::<ForkEvent>() == 112);
    assert!(core::mem::size_of::<ExitEvent>() == 32);
    assert!(core::mem::size_of::<NamespacesEvent>() == 16 + 8 + 28 + 4);
    assert!(core::mem::size_of::<CgroupEvent>() == 16 + 24 + CGROUP_PATH_LEN);
    assert!(core::mem::size_of::<Offsets>() == 68 * 4);
};
