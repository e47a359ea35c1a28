//! The exec program's record: the task, the filename and argv, and what
//! detections need beside them, read in the kernel at the exec: the
//! working directory and the executed file's path (dentry walks up to the
//! task's root, across mounts), the executed file itself (`bprm->file`:
//! inode, device, mode, link count, filesystem, overlayfs upper layer),
//! whether a `#!` script was run, the controlling terminal and the audit
//! login identity.
//!
//! The record is built in a per-CPU scratch buffer and only its used part
//! is copied into the ring buffer (`bpf_ringbuf_output`): a typical exec
//! takes ~230 bytes of ring (BENCHMARKS.md) instead of the ~2.7 KiB the caps
//! allow.

use core::ffi::c_void;

use aya_ebpf::helpers::generated;
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::BtfTracePointContext;
use vigil_ebpf_common::{
    ARGS_LEN, EXEC_ARGS_TRUNCATED, EXEC_ARGS_UNREADABLE, EXEC_CWD_TRUNCATED, EXEC_CWD_UNREADABLE, EXEC_DATA_AREA,
    EXEC_DATA_MASK, EXEC_EXE_TRUNCATED, EXEC_EXE_UNREADABLE, EXEC_EXE_UPPER_LAYER, EXEC_FILENAME_TRUNCATED, EXEC_LOGIN,
    EXEC_SCRIPT, EXEC_TTY, ExecEvent, ExecScratch, FILENAME_LEN, NAME_LEN, OVERLAYFS_SUPER_MAGIC, PATH_DEPTH, PATH_LEN,
    counter, kind,
};

use super::{EVENTS, count, exec_cgroup_v1_id, field, fill_task, header, off, start};

/// One exec record per CPU, built here before it is output.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

pub fn try_exec(ctx: &BtfTracePointContext) -> Result<(), ()> {
    start(kind::EXEC).ok_or(())?;
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let Some(scratch) = EXEC_SCRATCH.get_ptr_mut(0) else {
        count(counter::LOST_READ);
        return Err(());
    };
    // SAFETY: this CPU's slot; exec programs do not nest on one CPU.
    let s = unsafe { &mut *scratch };
    let Ok(used) = fill(s, task, bprm) else {
        count(counter::LOST_READ);
        return Err(());
    };
    let size = core::mem::size_of::<ExecEvent>() + (used & EXEC_DATA_MASK);
    // SAFETY: `size` is at most the scratch buffer's size (checked by the
    // verifier from the mask).
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const u8, size) };
    EVENTS.output::<[u8]>(bytes, 0).map_err(|_| count(counter::LOST_RING_FULL))
}

/// Fills the record; returns the bytes of data used.
#[inline(always)]
fn fill(s: &mut ExecScratch, task: *const u8, bprm: *const u8) -> Result<usize, ()> {
    let ev = &mut s.event;
    ev.header = header(kind::EXEC, 0);
    fill_task(&mut ev.task, task)?;
    ev.task.cgroup_v1_id = exec_cgroup_v1_id(task);
    // Every field is written: the buffer holds the previous exec's record.
    ev.filename_len = 0;
    ev.args_len = 0;
    ev.flags = 0;
    ev.cwd_len = 0;
    ev.exe_len = 0;
    ev.login_uid = u32::MAX;
    ev.session_id = u32::MAX;
    ev.tty_major = 0;
    ev.tty_minor = 0;
    ev.tty_driver_type = 0;
    ev.exe_mode = 0;
    ev.exe_nlink = 0;
    ev.exe_ino = 0;
    ev.exe_dev = 0;
    ev._pad = 0;
    ev.exe_fs_magic = 0;
    let mut off = 0usize;

    // The path given to execve, and whether a `#!` line swapped in an
    // interpreter (binfmt_script points `interp` away from `filename`).
    if let Ok(name) = field::<*const u8>(bprm, off!(linux_binprm_filename)) {
        let n = read_kernel_str(&mut s.data, off, FILENAME_LEN, name as u64);
        if n > 0 {
            ev.filename_len = (n - 1) as u32;
            off += n - 1;
            if n == FILENAME_LEN {
                ev.flags |= EXEC_FILENAME_TRUNCATED;
            }
        }
        let interp: *const u8 = field(bprm, off!(linux_binprm_interp)).unwrap_or(core::ptr::null());
        if !interp.is_null() && interp != name {
            ev.flags |= EXEC_SCRIPT;
        }
    }

    // argv, from the new image's stack.
    let mm: *const u8 = field(task, off!(task_struct_mm)).unwrap_or(core::ptr::null());
    match (field::<u64>(mm, off!(mm_struct_arg_start)), field::<u64>(mm, off!(mm_struct_arg_end))) {
        (Ok(begin), Ok(end)) => {
            let len = end.saturating_sub(begin);
            let n = if len > ARGS_LEN as u64 {
                ev.flags |= EXEC_ARGS_TRUNCATED;
                ARGS_LEN
            } else {
                len as usize
            };
            let at = off & EXEC_DATA_MASK;
            // SAFETY: at most ARGS_LEN bytes at a masked offset: inside the area.
            let rc = unsafe {
                generated::bpf_probe_read_user(
                    s.data.as_mut_ptr().add(at) as *mut c_void,
                    n as u32,
                    begin as *const c_void,
                )
            };
            if rc == 0 {
                ev.args_len = n as u32;
                off += n;
            } else {
                ev.flags |= EXEC_ARGS_UNREADABLE;
            }
        }
        _ => ev.flags |= EXEC_ARGS_UNREADABLE,
    }

    // The working directory, up to the task's root.
    let fs = field::<*const u8>(task, off!(task_struct_fs)).unwrap_or(core::ptr::null()) as u64;
    let root = PathPtrs::at(fs, off!(fs_struct_root));
    let pwd = PathPtrs::at(fs, off!(fs_struct_pwd));
    if fs == 0 || pwd.dentry == 0 {
        ev.flags |= EXEC_CWD_UNREADABLE;
    } else {
        let (n, whole) = walk(&mut s.data, &mut s.names, off, pwd, root);
        ev.cwd_len = n as u32;
        off = used(ev);
        if !whole {
            ev.flags |= EXEC_CWD_TRUNCATED;
        }
    }

    // The file the kernel executes (the interpreter, for a script).
    let file: *const u8 = field(bprm, off!(linux_binprm_file)).unwrap_or(core::ptr::null());
    let exe = PathPtrs::at(file as u64, off!(file_f_path));
    if file.is_null() || exe.dentry == 0 {
        ev.flags |= EXEC_EXE_UNREADABLE;
    } else {
        let (n, whole) = walk(&mut s.data, &mut s.names, off, exe, root);
        ev.exe_len = n as u32;
        off = used(ev);
        if !whole {
            ev.flags |= EXEC_EXE_TRUNCATED;
        }
        let inode: *const u8 = field(file, off!(file_f_inode)).unwrap_or(core::ptr::null());
        ev.exe_mode = field::<u16>(inode, off!(inode_i_mode)).unwrap_or(0) as u32;
        ev.exe_nlink = field::<u32>(inode, off!(inode_i_nlink)).unwrap_or(0);
        ev.exe_ino = field::<u64>(inode, off!(inode_i_ino)).unwrap_or(0);
        let sb: *const u8 = field(inode, off!(inode_i_sb)).unwrap_or(core::ptr::null());
        ev.exe_dev = field::<u32>(sb, off!(super_block_s_dev)).unwrap_or(0);
        ev.exe_fs_magic = field::<u64>(sb, off!(super_block_s_magic)).unwrap_or(0);
        if ev.exe_fs_magic == OVERLAYFS_SUPER_MAGIC
            && off!(ovl_inode_upperdentry) != 0
            && read_u64(inode as u64 + off!(ovl_inode_upperdentry) as u64) != 0
        {
            ev.flags |= EXEC_EXE_UPPER_LAYER;
        }
    }

    // The controlling terminal.
    let signal: *const u8 = field(task, off!(task_struct_signal)).unwrap_or(core::ptr::null());
    let tty: *const u8 = field(signal, off!(signal_struct_tty)).unwrap_or(core::ptr::null());
    if !tty.is_null() {
        let index: i32 = field(tty, off!(tty_struct_index)).unwrap_or(0);
        let driver: *const u8 = field(tty, off!(tty_struct_driver)).unwrap_or(core::ptr::null());
        let major: i32 = field(driver, off!(tty_driver_major)).unwrap_or(0);
        let minor_start: i32 = field(driver, off!(tty_driver_minor_start)).unwrap_or(0);
        let driver_type: i16 = field(driver, off!(tty_driver_type)).unwrap_or(0);
        ev.tty_major = major as u32;
        ev.tty_minor = (minor_start + index) as u32;
        ev.tty_driver_type = driver_type as u32;
        ev.flags |= EXEC_TTY;
    }

    // The audit login identity (kept across su and sudo).
    if off!(task_struct_loginuid) != 0 {
        ev.login_uid = field::<u32>(task, off!(task_struct_loginuid)).unwrap_or(u32::MAX);
        ev.session_id = field::<u32>(task, off!(task_struct_sessionid)).unwrap_or(u32::MAX);
        ev.flags |= EXEC_LOGIN;
    }
    Ok(off)
}

/// The data bytes used so far, read back from the record. Read from map
/// memory, the verifier knows nothing of the value but its masked use: so
/// the many ways a path walk can end (each with its own length) leave one
/// state behind, and what follows is verified once, not once per way.
#[inline(always)]
fn used(ev: &ExecEvent) -> usize {
    // SAFETY: reads of this CPU's record fields.
    let read = |f: &u32| unsafe { core::ptr::read_volatile(f) } as usize;
    read(&ev.filename_len) + read(&ev.args_len) + read(&ev.cwd_len) + read(&ev.exe_len)
}

/// A `struct path`'s two pointers, as plain addresses.
#[derive(Clone, Copy)]
struct PathPtrs {
    mnt: u64,
    dentry: u64,
}

impl PathPtrs {
    /// The `struct path` at `base + at` (0s when `base` is 0).
    #[inline(always)]
    fn at(base: u64, at: u32) -> Self {
        if base == 0 {
            return PathPtrs { mnt: 0, dentry: 0 };
        }
        let path = base + at as u64;
        PathPtrs { mnt: read_u64(path + off!(path_mnt) as u64), dentry: read_u64(path + off!(path_dentry) as u64) }
    }
}

/// Writes the components of `path`, leaf first, each NUL-terminated, at
/// `start` in the data area, up to `root` (or the top of the mount tree)
/// and at most [`PATH_LEN`] bytes; returns the bytes written and whether
/// the walk reached the root (false: cut).
///
/// Two loops, so that the verifier's work stays linear in the depth: the
/// first walks the dentries and notes each component's name pointer (its
/// paths differ only in pointers the verifier need not track, and prune);
/// the second copies the names (one path per step).
#[inline(always)]
fn walk(
    data: &mut [u8; EXEC_DATA_AREA],
    names: &mut [u64; PATH_DEPTH + 1],
    start: usize,
    path: PathPtrs,
    root: PathPtrs,
) -> (usize, bool) {
    let PathPtrs { mut mnt, mut dentry } = path;
    let mut depth = PATH_DEPTH;
    let mut whole = false;
    for i in 0..PATH_DEPTH {
        if dentry == root.dentry && mnt == root.mnt {
            (depth, whole) = (i, true);
            break;
        }
        // At the top of a mount, continue from where it is mounted (twice:
        // a mount may sit on the root of another).
        let mut at_top = false;
        for _ in 0..2 {
            if dentry == read_u64(mnt + off!(vfsmount_mnt_root) as u64) {
                let mount = mnt - off!(mount_mnt) as u64;
                let parent = read_u64(mount + off!(mount_mnt_parent) as u64);
                if parent == mount || parent == 0 {
                    at_top = true;
                    break;
                }
                dentry = read_u64(mount + off!(mount_mnt_mountpoint) as u64);
                mnt = parent + off!(mount_mnt) as u64;
            }
        }
        let parent = read_u64(dentry + off!(dentry_d_parent) as u64);
        // The top of the mount tree, or the task's root reached by a hop.
        if at_top || (dentry == root.dentry && mnt == root.mnt) || parent == 0 {
            (depth, whole) = (i, true);
            break;
        }
        names[i & (PATH_DEPTH - 1)] = read_u64(dentry + (off!(dentry_d_name) + off!(qstr_name)) as u64);
        // A dentry that is its own parent and no mount's root is mounted
        // nowhere (a memfd, a pipe): its name is the whole path, as d_path
        // gives it (`/memfd:name`).
        if parent == dentry {
            (depth, whole) = (i + 1, true);
            break;
        }
        dentry = parent;
    }
    // Through map memory: however the walk ended, one state goes on.
    let slot = &mut names[PATH_DEPTH];
    // SAFETY: writes and reads of this CPU's scratch buffer.
    unsafe { core::ptr::write_volatile(slot, depth as u64 | (whole as u64) << 32) };
    let ended = unsafe { core::ptr::read_volatile(slot) };
    let (depth, whole) = ((ended & 0xff) as usize, ended >> 32 != 0);
    let mut off = start;
    for i in 0..PATH_DEPTH {
        if i >= depth {
            break;
        }
        let n = read_kernel_str(data, off, NAME_LEN, names[i & (PATH_DEPTH - 1)]);
        if n == 0 || off + n > start + PATH_LEN {
            return (off - start, false);
        }
        off += n;
    }
    (off - start, whole)
}

/// Reads a NUL-terminated kernel string of at most `max` bytes (a constant
/// ≤ NAME_LEN or FILENAME_LEN) into `data` at `off` (masked); returns the
/// bytes read with the NUL, 0 on failure.
#[inline(always)]
fn read_kernel_str(data: &mut [u8; EXEC_DATA_AREA], off: usize, max: usize, src: u64) -> usize {
    let at = off & EXEC_DATA_MASK;
    // SAFETY: at most `max` (≤ 512) bytes at a masked offset: inside the area.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(data.as_mut_ptr().add(at) as *mut c_void, max as u32, src as *const c_void)
    };
    if n > 0 { n as usize } else { 0 }
}

/// A kernel word at `addr`; 0 when unreadable (the helper zeroes it). No
/// branch on the result: a branch would hand the verifier a known 0 on one
/// side and split every later state in two.
#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    let mut v = 0u64;
    // SAFETY: bpf_probe_read_kernel faults safely on any address and
    // writes at most 8 bytes into `v`.
    unsafe { generated::bpf_probe_read_kernel(&mut v as *mut u64 as *mut c_void, 8, addr as *const c_void) };
    v
}
