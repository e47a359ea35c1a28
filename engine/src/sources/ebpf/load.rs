//! Loading the eBPF programs: the struct offsets from the kernel's BTF,
//! the object with those offsets and the configured ring buffer size, its
//! maps, and each program attached to its BTF tracepoint.

use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use vigil_ebpf_common::kind as rec;

use super::error::EbpfError;
use super::offsets::read_offsets;
use super::tracefs;
use crate::config::EbpfConfig;
use crate::enrich::hierarchies::V1Hierarchy;

/// The programs, built by engine/build.rs; empty when built without bpf-linker.
static PROGRAMS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil-ebpf"));

/// Each program; it attaches to the tracepoint of the same name.
const PROGRAMS: [&str; 5] =
    ["sched_process_exec", "sched_process_fork", "sched_process_exit", "cgroup_mkdir", "cgroup_rmdir"];

/// Programs on syscall exit tracepoints (`syscalls/<name>`): namespace
/// changes. Optional: without syscall tracepoints (a kernel without
/// CONFIG_FTRACE_SYSCALLS, no tracefs) a process that enters a container
/// is seen at its next exec instead, and the log says so.
const SYSCALL_PROGRAMS: [&str; 2] = ["sys_exit_setns", "sys_exit_unshare"];

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK (later ones to
/// the memory cgroup): there, the limit is lifted, which takes
/// CAP_SYS_RESOURCE. Without it the load goes on, and fails with a clear
/// error only if the maps do not fit the limit.
fn raise_memlock_before_5_11() {
    let Some((major, minor)) = kernel_release() else { return };
    if (major, minor) >= (5, 11) {
        return;
    }
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit for the calling process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::warn!(
            kernel = %format!("{major}.{minor}"),
            error = %std::io::Error::last_os_error(),
            "this kernel charges eBPF maps to the locked-memory limit and it cannot be lifted (CAP_SYS_RESOURCE); \
             loading may fail if the ring buffer does not fit it"
        );
    }
}

/// The running kernel's major and minor version.
fn kernel_release() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// True when this binary carries the eBPF programs.
pub fn built_in() -> bool {
    !PROGRAMS_OBJECT.is_empty()
}

/// The loaded programs (detached when `bpf` drops) and the maps the
/// reader uses.
pub struct Loaded {
    pub bpf: Ebpf,
    pub ring: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub filter: Array<MapData, u32>,
}

/// Loads and attaches every program; fails (attaching nothing that stays)
/// when the kernel lacks what they need.
pub fn load(config: &EbpfConfig, v1: Option<&V1Hierarchy>) -> Result<Loaded, EbpfError> {
    if !built_in() {
        return Err(EbpfError::NotBuiltIn);
    }
    if config.mount_tracefs {
        tracefs::ensure();
    }
    raise_memlock_before_5_11();
    let offsets = read_offsets(&config.btf, v1)?;
    let btf = Btf::parse_file(&config.btf, Endianness::default())
        .map_err(|source| EbpfError::ParseBtf { path: config.btf.clone(), source })?;
    let mut bpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("EVENTS", config.ring_buffer.as_u64() as u32)
        .load(PROGRAMS_OBJECT)
        .map_err(EbpfError::Load)?;
    let mut take = |name: &'static str| bpf.take_map(name).ok_or(EbpfError::Missing { what: "map", name });
    let map_error = |name: &'static str| move |source| EbpfError::Map { name, source };
    let mut filter = Array::<MapData, u32>::try_from(take("FILTER")?).map_err(map_error("FILTER"))?;
    filter.set(0, rec::ALL_MASK, 0).map_err(map_error("FILTER"))?;
    let ring = RingBuf::try_from(take("EVENTS")?).map_err(map_error("EVENTS"))?;
    let counters = PerCpuArray::<MapData, u64>::try_from(take("COUNTERS")?).map_err(map_error("COUNTERS"))?;
    for name in PROGRAMS {
        let program: &mut BtfTracePoint = bpf
            .program_mut(name)
            .ok_or(EbpfError::Missing { what: "program", name })?
            .try_into()
            .map_err(|source| EbpfError::Program { name, source })?;
        load_program(program, name, &btf)?;
        program.attach().map_err(|source| EbpfError::Attach { name, source })?;
    }
    for name in SYSCALL_PROGRAMS {
        if let Err(e) = attach_syscall_program(&mut bpf, name) {
            tracing::warn!(
                program = name,
                error = %crate::error_chain(&e),
                "namespace changes are not traced: a process entering a container is seen at its next exec"
            );
        }
    }
    Ok(Loaded { bpf, ring, counters, filter })
}

fn attach_syscall_program(bpf: &mut Ebpf, name: &'static str) -> Result<(), EbpfError> {
    let program: &mut TracePoint = bpf
        .program_mut(name)
        .ok_or(EbpfError::Missing { what: "program", name })?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    let _blocked = SignalsBlocked::here();
    program.load().map_err(|source| EbpfError::Program { name, source })?;
    program.attach("syscalls", name).map_err(|source| EbpfError::Attach { name, source })?;
    Ok(())
}

/// Loads one program. The verifier gives up with EAGAIN when a signal is
/// pending on the loading thread (a child exiting is enough: a busy parent
/// gets SIGCHLD after SIGCHLD). Signals are blocked on this thread while
/// loading (others take them; the rest wait), and a thread-directed signal
/// is retried, as libbpf does.
fn load_program(program: &mut BtfTracePoint, name: &'static str, btf: &Btf) -> Result<(), EbpfError> {
    let _blocked = SignalsBlocked::here();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match program.load(name, btf) {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts < 20 =>
            {
                tracing::debug!(program = name, attempts, "verifier interrupted by a signal; loading again");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(source) => return Err(EbpfError::Program { name, source }),
        }
    }
}

/// Every signal blocked on the calling thread until dropped.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn here() -> Self {
        // SAFETY: sigfillset and pthread_sigmask only write the sets given;
        // blocking signals on one thread is always allowed (SIGKILL and
        // SIGSTOP cannot be blocked and are not).
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `here` on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
