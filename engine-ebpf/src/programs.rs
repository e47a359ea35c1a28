//! The programs. Every `try_*` returns `Err(())` when the event could not
//! be delivered, after counting why.

mod exec;

use core::ffi::c_void;

use aya_ebpf::Global;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, generated,
};
use aya_ebpf::macros::{btf_tracepoint, map, tracepoint};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf};
use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use vigil_ebpf_common::{
    CGROUP_PATH_LEN, CgroupEvent, ExitEvent, ForkEvent, Header, NS_SETNS, NS_UNSHARE, NamespacesEvent, Offsets, Task,
    counter, filter, kind,
};

/// The ring buffer of records; its size is set by the daemon at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `vigil_ebpf_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Index 0: the mask of record kinds to emit (bit = kind); the daemon keeps
/// it equal to what its rules and process tree need.
#[map]
static FILTER: Array<u32> = Array::with_max_entries(1, 0);

/// Struct field offsets of the running kernel, set by the daemon at load.
#[unsafe(no_mangle)]
static OFFSETS: Global<Offsets> = Global::new(Offsets {
    task_struct_pid: 0,
    task_struct_tgid: 0,
    task_struct_real_parent: 0,
    task_struct_mm: 0,
    task_struct_nsproxy: 0,
    task_struct_real_cred: 0,
    task_struct_start_boottime: 0,
    task_struct_exit_code: 0,
    mm_struct_arg_start: 0,
    mm_struct_arg_end: 0,
    linux_binprm_filename: 0,
    nsproxy_uts_ns: 0,
    nsproxy_ipc_ns: 0,
    nsproxy_mnt_ns: 0,
    nsproxy_pid_ns_for_children: 0,
    nsproxy_net_ns: 0,
    nsproxy_cgroup_ns: 0,
    uts_namespace_ns: 0,
    ipc_namespace_ns: 0,
    mnt_namespace_ns: 0,
    pid_namespace_ns: 0,
    net_ns: 0,
    cgroup_namespace_ns: 0,
    user_namespace_ns: 0,
    ns_common_inum: 0,
    cred_user_ns: 0,
    cgroup_kn: 0,
    cgroup_root: 0,
    cgroup_level: 0,
    kernfs_node_id: 0,
    cgroup_root_hierarchy_id: 0,
    linux_binprm_file: 0,
    linux_binprm_interp: 0,
    task_struct_fs: 0,
    task_struct_signal: 0,
    task_struct_loginuid: 0,
    task_struct_sessionid: 0,
    fs_struct_root: 0,
    fs_struct_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_name: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    file_f_path: 0,
    file_f_inode: 0,
    inode_i_mode: 0,
    inode_i_nlink: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    super_block_s_magic: 0,
    ovl_inode_upperdentry: 0,
    signal_struct_tty: 0,
    tty_struct_index: 0,
    tty_struct_driver: 0,
    tty_driver_major: 0,
    tty_driver_minor_start: 0,
    tty_driver_type: 0,
    task_struct_cgroups: 0,
    css_set_v1_subsys: 0,
    cgroup_subsys_state_cgroup: 0,
    cgroup_v1_hierarchy: 0,
    ready: 0,
});

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    let _ = exec::try_exec(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, kind::CGROUP_MKDIR);
    0
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, kind::CGROUP_RMDIR);
    0
}

// setns and unshare have no BTF tracepoint of their own: their syscall
// exit tracepoints fire for them alone (`sys_exit` would fire for every
// syscall of every process).

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    let _ = try_namespaces(&ctx, NS_SETNS);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    let _ = try_namespaces(&ctx, NS_UNSHARE);
    0
}

/// One field of `OFFSETS`, read from `.rodata` where it is used (a
/// volatile load, so the compiler does not fold the placeholder zeros in;
/// the verifier sees the value the daemon set). A copy of the whole
/// struct would take half the BPF stack.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: `Global` is `repr(transparent)` over the initialized value.
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!(
                (*(core::ptr::addr_of!(crate::programs::OFFSETS) as *const vigil_ebpf_common::Offsets)).$field
            ))
        }
    };
}
use off;

/// The filter mask when the offsets are set and `kind` is wanted; counts
/// it as seen.
#[inline(always)]
fn start(kind: u32) -> Option<u32> {
    let mask = FILTER.get(0).copied().unwrap_or(kind::ALL_MASK);
    if off!(ready) == 0 || mask & (1 << kind) == 0 {
        return None;
    }
    count(counter::SEEN + kind);
    Some(mask)
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, written only by programs on this CPU,
        // which do not nest for these tracepoints.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `base + offset`, where `base` is a BTF-typed kernel
/// pointer (a tracepoint argument, or a pointer read from one). The
/// offsets are constants in `.rodata`, so the verifier checks each access
/// against the kernel's BTF like a field access in C, and turns loads
/// through untrusted pointers into fault-safe ones (reading 0). Measured
/// against `bpf_probe_read_kernel` calls: ~10% less time per exec and per
/// fork program run (BENCHMARKS.md).
#[inline(always)]
fn field<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    if base.is_null() {
        return Err(());
    }
    // SAFETY: see above; the verifier rejects the program at load time if
    // an access does not match the BTF.
    Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) })
}

fn header(kind: u32, flags: u32) -> Header {
    // SAFETY: a helper with no preconditions.
    Header { kind, flags, boot_ns: unsafe { bpf_ktime_get_boot_ns() } }
}

/// Fills what the process tree keeps: pid, tgid, parent, start time and
/// cgroup (the current task's: the task itself at exec, its parent at
/// fork), and zeroes the rest.
#[inline(always)]
fn fill_task_brief(out: *mut Task, task: *const u8) -> Result<(), ()> {
    let pid: i32 = field(task, off!(task_struct_pid))?;
    let tgid: i32 = field(task, off!(task_struct_tgid))?;
    let parent: *const u8 = field(task, off!(task_struct_real_parent))?;
    let ppid: i32 = field(parent, off!(task_struct_tgid)).unwrap_or(0);
    // SAFETY: `out` points into a reserved ring buffer entry.
    let out = unsafe { &mut *out };
    out.pid = pid as u32;
    out.tgid = tgid as u32;
    out.ppid = ppid as u32;
    out.uid = 0;
    out.gid = 0;
    out._pad = 0;
    // SAFETY: a helper with no preconditions.
    out.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // Read at exec only (`exec_cgroup_v1_id`): a fork's is its parent's,
    // which the daemon's process tree has.
    out.cgroup_v1_id = 0;
    out.start_boot_ns = field(task, off!(task_struct_start_boottime)).unwrap_or(0);
    out.ns = [0; 7];
    out._pad2 = 0;
    out.comm = [0; 16];
    Ok(())
}

/// The id of `task`'s cgroup in the chosen v1 hierarchy
/// (`task->cgroups->subsys[ssid]->cgroup->kn->id`); 0 when none was chosen
/// or unreadable. On a v1 host every task's v2 id is the root's, so this is
/// what tells a container's processes from the host's.
#[inline(always)]
pub(crate) fn exec_cgroup_v1_id(task: *const u8) -> u64 {
    if off!(cgroup_v1_hierarchy) == 0 {
        return 0;
    }
    let read = || -> Result<u64, ()> {
        let css_set: *const u8 = field(task, off!(task_struct_cgroups))?;
        let css: *const u8 = field(css_set, off!(css_set_v1_subsys))?;
        let cgroup: *const u8 = field(css, off!(cgroup_subsys_state_cgroup))?;
        let kn: *const u8 = field(cgroup, off!(cgroup_kn))?;
        field(kn, off!(kernfs_node_id))
    };
    read().unwrap_or(0)
}

/// Fills the whole task: [`fill_task_brief`], plus uid, gid and comm (of
/// the current task) and the task's namespaces.
#[inline(always)]
fn fill_task(out: *mut Task, task: *const u8) -> Result<(), ()> {
    fill_task_brief(out, task)?;
    let ids = bpf_get_current_uid_gid();
    // SAFETY: `out` points into a reserved ring buffer entry.
    let out = unsafe { &mut *out };
    out.uid = ids as u32;
    out.gid = (ids >> 32) as u32;
    out.comm = bpf_get_current_comm().unwrap_or([0; 16]);

    namespaces(task, &mut out.ns);
    Ok(())
}

/// `task`'s namespace inode numbers, in [`Task::ns`]'s order (0 where unreadable).
#[inline(always)]
fn namespaces(task: *const u8, out: &mut [u32; 7]) {
    let nsproxy: *const u8 = field(task, off!(task_struct_nsproxy)).unwrap_or(core::ptr::null());
    let inum = |holder: *const u8, ptr_offset: u32, ns_offset: u32| -> u32 {
        let ns: *const u8 = match field(holder, ptr_offset) {
            Ok(p) => p,
            Err(()) => return 0,
        };
        field(ns, ns_offset + off!(ns_common_inum)).unwrap_or(0)
    };
    out[0] = inum(nsproxy, off!(nsproxy_pid_ns_for_children), off!(pid_namespace_ns));
    out[1] = inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_namespace_ns));
    out[2] = inum(nsproxy, off!(nsproxy_net_ns), off!(net_ns));
    out[3] = inum(nsproxy, off!(nsproxy_uts_ns), off!(uts_namespace_ns));
    out[4] = inum(nsproxy, off!(nsproxy_ipc_ns), off!(ipc_namespace_ns));
    let cred: *const u8 = field(task, off!(task_struct_real_cred)).unwrap_or(core::ptr::null());
    out[5] = inum(cred, off!(cred_user_ns), off!(user_namespace_ns));
    out[6] = inum(nsproxy, off!(nsproxy_cgroup_ns), off!(cgroup_namespace_ns));
}

/// Submits a filled entry, or discards it and counts the failed read.
#[inline(always)]
fn submit_or_count<T: 'static>(entry: RingBufEntry<T>, filled: Result<(), ()>) -> Result<(), ()> {
    match filled {
        Ok(()) => {
            entry.submit(0);
            Ok(())
        }
        Err(()) => {
            entry.discard(0);
            count(counter::LOST_READ);
            Err(())
        }
    }
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let child: *const u8 = ctx.arg(1);
    // New threads are not new processes: skip them before counting.
    let pid: i32 = field(child, off!(task_struct_pid))?;
    let tgid: i32 = field(child, off!(task_struct_tgid))?;
    if pid != tgid {
        return Ok(());
    }
    let mask = start(kind::FORK).ok_or(())?;
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(counter::LOST_RING_FULL);
        return Err(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved entry of the right size, fully written below.
    let filled = unsafe {
        if mask & filter::FORK_BRIEF != 0 {
            (*ev).header = header(kind::FORK, vigil_ebpf_common::header::BRIEF);
            fill_task_brief(&mut (*ev).task, child)
        } else {
            (*ev).header = header(kind::FORK, 0);
            fill_task(&mut (*ev).task, child)
        }
    };
    submit_or_count(entry, filled)
}

fn try_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    // Only the thread group leader's exit is the process's.
    if pid != tgid {
        return Ok(());
    }
    start(kind::EXIT).ok_or(())?;
    let task: *const u8 = ctx.arg(0);
    let exit_code: i32 = field(task, off!(task_struct_exit_code)).unwrap_or(0);
    let ev = ExitEvent { header: header(kind::EXIT, 0), pid, tgid, exit_code: exit_code as u32, _pad: 0 };
    EVENTS.output::<ExitEvent>(&ev, 0).map_err(|_| count(counter::LOST_RING_FULL))
}

/// The namespaces of the task that just called setns or unshare, if the
/// call succeeded.
fn try_namespaces(ctx: &TracePointContext, how: u32) -> Result<(), ()> {
    // `struct trace_event_raw_sys_exit`: the return value at 16.
    // SAFETY: the syscall exit tracepoint's record has `long ret` at 16.
    let ret: i64 = unsafe { ctx.read_at(16) }.map_err(|_| ())?;
    if ret != 0 {
        return Ok(());
    }
    start(kind::NAMESPACES).ok_or(())?;
    // SAFETY: a helper with no preconditions; its result is a BTF-typed
    // pointer to the current task, read like the BTF tracepoints' arguments.
    let task = unsafe { generated::bpf_get_current_task_btf() } as *const u8;
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut ev = NamespacesEvent {
        header: header(kind::NAMESPACES, 0),
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ns: [0; 7],
        how,
    };
    namespaces(task, &mut ev.ns);
    EVENTS.output::<NamespacesEvent>(&ev, 0).map_err(|_| count(counter::LOST_RING_FULL))
}

fn try_cgroup(ctx: &BtfTracePointContext, kind: u32) -> Result<(), ()> {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    // Only the cgroup v2 hierarchy (id 0) and the chosen v1 one: the other
    // v1 hierarchies repeat the same directories once per controller.
    let root: *const u8 = field(cgrp, off!(cgroup_root))?;
    let hierarchy_id: i32 = field(root, off!(cgroup_root_hierarchy_id))?;
    let v1 = off!(cgroup_v1_hierarchy);
    if hierarchy_id != 0 && (v1 == 0 || hierarchy_id as u32 != v1) {
        return Ok(());
    }
    start(kind).ok_or(())?;
    let Some(mut entry) = EVENTS.reserve::<CgroupEvent>(0) else {
        count(counter::LOST_RING_FULL);
        return Err(());
    };
    // SAFETY: a reserved entry of the right size, fully written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, 0);
    ev.hierarchy_id = hierarchy_id as u32;
    ev._pad = 0;
    let kn: *const u8 = field(cgrp, off!(cgroup_kn)).unwrap_or(core::ptr::null());
    let (Ok(id), Ok(level)) = (field::<u64>(kn, off!(kernfs_node_id)), field::<i32>(cgrp, off!(cgroup_level))) else {
        entry.discard(0);
        count(counter::LOST_READ);
        return Err(());
    };
    ev.id = id;
    ev.level = level as u32;
    // SAFETY: the destination is the entry's own buffer of that size.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            ev.path.as_mut_ptr() as *mut c_void,
            CGROUP_PATH_LEN as u32,
            path as *const c_void,
        )
    };
    ev.path_len = if n > 0 { (n - 1) as u32 } else { 0 };
    entry.submit(0);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
