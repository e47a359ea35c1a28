//! tracefs, mounted if absent (`source.ebpf.mount_tracefs`). Vigil's
//! programs attach to BTF tracepoints by BTF id, without tracefs; mounting
//! it where the host has none (a minimal host, a container's own mount
//! namespace) is for the tools an operator reaches for next to an eBPF
//! agent: `bpftool`, `perf`, `bpftrace`. A failure is logged, never fatal.

use std::ffi::CStr;
use std::path::Path;

/// Where tracefs is mounted by convention (Linux 4.1+).
pub const TRACEFS: &CStr = c"/sys/kernel/tracing";

/// What [`mount_if_absent`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// A tracefs was mounted already, here.
    Present(String),
    /// It was absent; it is now mounted at [`TRACEFS`].
    Mounted,
    /// It was absent and could not be mounted (why).
    Unavailable(String),
}

/// Mounts tracefs at [`TRACEFS`] unless one is mounted already.
pub fn mount_if_absent() -> Tracefs {
    if let Some(at) = crate::proc::mount_point_of("tracefs") {
        return Tracefs::Present(at.to_string_lossy().into_owned());
    }
    let target = Path::new(TRACEFS.to_str().expect("ASCII"));
    if !target.is_dir() {
        return Tracefs::Unavailable(format!("{} does not exist (a kernel without tracefs?)", target.display()));
    }
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            TRACEFS.as_ptr(),
            c"tracefs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Tracefs::Unavailable(format!("mount: {}", std::io::Error::last_os_error()));
    }
    Tracefs::Mounted
}

/// [`mount_if_absent`], logged.
pub fn ensure() {
    match mount_if_absent() {
        Tracefs::Present(at) => tracing::debug!(at, "tracefs is mounted"),
        Tracefs::Mounted => {
            tracing::info!(at = ?TRACEFS, "tracefs was not mounted; mounted it (for tracing tools: Vigil's programs do not need it)")
        }
        Tracefs::Unavailable(why) => {
            tracing::warn!(why, "tracefs is not mounted and cannot be; Vigil does not need it, tracing tools would")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::proc::{first_of, parse_mountinfo};

    #[test]
    fn finds_tracefs_by_type_wherever_it_is_mounted() {
        let find = |info: &str| first_of(&parse_mountinfo(info), &["tracefs"]);
        let info = "22 28 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
                    45 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs nodev rw\n";
        assert_eq!(find(info), Some(PathBuf::from("/sys/kernel/tracing")));
        let debug = "30 29 0:7 / /sys/kernel/debug rw - debugfs debugfs rw\n\
                     31 30 0:13 / /sys/kernel/debug/tracing rw shared:9 - tracefs tracefs rw\n";
        assert_eq!(find(debug), Some(PathBuf::from("/sys/kernel/debug/tracing")));
        assert_eq!(find("22 28 0:21 / /sys rw - sysfs sysfs rw\n"), None);
        assert_eq!(find("garbage\n\n - \n"), None);
    }
}
