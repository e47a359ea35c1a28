//! The programs. Every `try_*` returns `Err(())` when the event could not
//! be delivered, after counting why.

use core::ffi::c_void;

use aya_ebpf::Global;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, generated,
};
use aya_ebpf::macros::{btf_tracepoint, map};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf};
use aya_ebpf::programs::BtfTracePointContext;
use vigil_ebpf_common::{
    ARGS_LEN, CGROUP_PATH_LEN, CgroupEvent, EXEC_ARGS_TRUNCATED, EXEC_ARGS_UNREADABLE, EXEC_FILENAME_TRUNCATED,
    ExecEvent, ExitEvent, FILENAME_LEN, ForkEvent, Header, Offsets, Task, counter, filter, kind,
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
    ready: 0,
});

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    let _ = try_exec(&ctx);
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

/// The offsets and the filter mask when the offsets are set and `kind` is
/// wanted; counts it as seen.
#[inline(always)]
fn start(kind: u32) -> Option<(Offsets, u32)> {
    let offsets = OFFSETS.load();
    let mask = FILTER.get(0).copied().unwrap_or(kind::ALL_MASK);
    if offsets.ready == 0 || mask & (1 << kind) == 0 {
        return None;
    }
    count(counter::SEEN + kind);
    Some((offsets, mask))
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
fn fill_task_brief(out: *mut Task, task: *const u8, o: &Offsets) -> Result<(), ()> {
    let pid: i32 = field(task, o.task_struct_pid)?;
    let tgid: i32 = field(task, o.task_struct_tgid)?;
    let parent: *const u8 = field(task, o.task_struct_real_parent)?;
    let ppid: i32 = field(parent, o.task_struct_tgid).unwrap_or(0);
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
    out.start_boot_ns = field(task, o.task_struct_start_boottime).unwrap_or(0);
    out.ns = [0; 7];
    out._pad2 = 0;
    out.comm = [0; 16];
    Ok(())
}

/// Fills the whole task: [`fill_task_brief`], plus uid, gid and comm (of
/// the current task) and the task's namespaces.
#[inline(always)]
fn fill_task(out: *mut Task, task: *const u8, o: &Offsets) -> Result<(), ()> {
    fill_task_brief(out, task, o)?;
    let ids = bpf_get_current_uid_gid();
    // SAFETY: `out` points into a reserved ring buffer entry.
    let out = unsafe { &mut *out };
    out.uid = ids as u32;
    out.gid = (ids >> 32) as u32;
    out.comm = bpf_get_current_comm().unwrap_or([0; 16]);

    let nsproxy: *const u8 = field(task, o.task_struct_nsproxy).unwrap_or(core::ptr::null());
    let inum = |holder: *const u8, ptr_offset: u32, ns_offset: u32| -> u32 {
        let ns: *const u8 = match field(holder, ptr_offset) {
            Ok(p) => p,
            Err(()) => return 0,
        };
        field(ns, ns_offset + o.ns_common_inum).unwrap_or(0)
    };
    out.ns[0] = inum(nsproxy, o.nsproxy_pid_ns_for_children, o.pid_namespace_ns);
    out.ns[1] = inum(nsproxy, o.nsproxy_mnt_ns, o.mnt_namespace_ns);
    out.ns[2] = inum(nsproxy, o.nsproxy_net_ns, o.net_ns);
    out.ns[3] = inum(nsproxy, o.nsproxy_uts_ns, o.uts_namespace_ns);
    out.ns[4] = inum(nsproxy, o.nsproxy_ipc_ns, o.ipc_namespace_ns);
    let cred: *const u8 = field(task, o.task_struct_real_cred).unwrap_or(core::ptr::null());
    out.ns[5] = inum(cred, o.cred_user_ns, o.user_namespace_ns);
    out.ns[6] = inum(nsproxy, o.nsproxy_cgroup_ns, o.cgroup_namespace_ns);
    Ok(())
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let (o, _) = start(kind::EXEC).ok_or(())?;
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::LOST_RING_FULL);
        return Err(());
    };
    let filled = fill_exec(entry.as_mut_ptr(), task, bprm, &o);
    submit_or_count(entry, filled)
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

#[inline(always)]
fn fill_exec(ev: *mut ExecEvent, task: *const u8, bprm: *const u8, o: &Offsets) -> Result<(), ()> {
    // SAFETY: `ev` is a reserved ring buffer entry of the right size; every
    // field is written before it is submitted.
    let ev = unsafe { &mut *ev };
    ev.header = header(kind::EXEC, 0);
    fill_task(&mut ev.task, task, o)?;
    ev.flags = 0;
    ev._pad = 0;

    ev.filename_len = 0;
    if let Ok(name) = field::<*const u8>(bprm, o.linux_binprm_filename) {
        // SAFETY: the destination is the entry's own buffer of that size.
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                ev.filename.as_mut_ptr() as *mut c_void,
                FILENAME_LEN as u32,
                name as *const c_void,
            )
        };
        if n > 0 {
            ev.filename_len = (n - 1) as u32;
            if n as usize == FILENAME_LEN {
                ev.flags |= EXEC_FILENAME_TRUNCATED;
            }
        }
    }

    ev.args_len = 0;
    let mm: *const u8 = field(task, o.task_struct_mm).unwrap_or(core::ptr::null());
    let (Ok(start), Ok(end)) = (field::<u64>(mm, o.mm_struct_arg_start), field::<u64>(mm, o.mm_struct_arg_end)) else {
        ev.flags |= EXEC_ARGS_UNREADABLE;
        return Ok(());
    };
    let len = end.saturating_sub(start);
    let n = if len > ARGS_LEN as u64 {
        ev.flags |= EXEC_ARGS_TRUNCATED;
        ARGS_LEN as u32
    } else {
        len as u32
    };
    // SAFETY: at most ARGS_LEN bytes into the entry's own ARGS_LEN buffer.
    let rc = unsafe { generated::bpf_probe_read_user(ev.args.as_mut_ptr() as *mut c_void, n, start as *const c_void) };
    if rc == 0 {
        ev.args_len = n;
    } else {
        ev.flags |= EXEC_ARGS_UNREADABLE;
    }
    Ok(())
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let child: *const u8 = ctx.arg(1);
    let o = OFFSETS.load();
    // New threads are not new processes: skip them before counting.
    let pid: i32 = field(child, o.task_struct_pid)?;
    let tgid: i32 = field(child, o.task_struct_tgid)?;
    if pid != tgid {
        return Ok(());
    }
    let (o, mask) = start(kind::FORK).ok_or(())?;
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(counter::LOST_RING_FULL);
        return Err(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved entry of the right size, fully written below.
    let filled = unsafe {
        if mask & filter::FORK_BRIEF != 0 {
            (*ev).header = header(kind::FORK, vigil_ebpf_common::header::BRIEF);
            fill_task_brief(&mut (*ev).task, child, &o)
        } else {
            (*ev).header = header(kind::FORK, 0);
            fill_task(&mut (*ev).task, child, &o)
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
    let (o, _) = start(kind::EXIT).ok_or(())?;
    let task: *const u8 = ctx.arg(0);
    let exit_code: i32 = field(task, o.task_struct_exit_code).unwrap_or(0);
    let ev = ExitEvent { header: header(kind::EXIT, 0), pid, tgid, exit_code: exit_code as u32, _pad: 0 };
    EVENTS.output::<ExitEvent>(&ev, 0).map_err(|_| count(counter::LOST_RING_FULL))
}

fn try_cgroup(ctx: &BtfTracePointContext, kind: u32) -> Result<(), ()> {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let o = OFFSETS.load();
    // Only the cgroup v2 hierarchy (id 0): v1 controllers repeat the same
    // directories once per controller.
    let root: *const u8 = field(cgrp, o.cgroup_root)?;
    let hierarchy_id: i32 = field(root, o.cgroup_root_hierarchy_id)?;
    if hierarchy_id != 0 {
        return Ok(());
    }
    let (o, _) = start(kind).ok_or(())?;
    let Some(mut entry) = EVENTS.reserve::<CgroupEvent>(0) else {
        count(counter::LOST_RING_FULL);
        return Err(());
    };
    // SAFETY: a reserved entry of the right size, fully written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, 0);
    ev.hierarchy_id = hierarchy_id as u32;
    ev._pad = 0;
    let kn: *const u8 = field(cgrp, o.cgroup_kn).unwrap_or(core::ptr::null());
    let (Ok(id), Ok(level)) = (field::<u64>(kn, o.kernfs_node_id), field::<i32>(cgrp, o.cgroup_level)) else {
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
