//! Why the eBPF source cannot start: typed, so that a cause (the kernel
//! refusing for want of privileges) is recognised by its kind, not its text.

use std::path::PathBuf;

/// Why the eBPF source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this vigil was built without its eBPF programs (bpf-linker was missing at build time; run ./scripts/setup.sh and rebuild)"
    )]
    NotBuiltIn,
    #[error("cannot read kernel BTF {path}: {message}")]
    ReadBtf { path: PathBuf, message: String },
    #[error("the kernel's BTF ({path}) lacks {what}, which the eBPF programs read")]
    BtfLacks { path: PathBuf, what: String },
    #[error("cannot parse kernel BTF {path}")]
    ParseBtf {
        path: PathBuf,
        #[source]
        source: aya::BtfError,
    },
    #[error("loading the eBPF programs")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} {name}")]
    Missing { what: &'static str, name: &'static str },
    #[error("{name} map")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching program {name}")]
    Attach {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

impl EbpfError {
    /// What to do about it, when the cause says: the kernel refused for
    /// want of privileges.
    pub fn hint(&self) -> Option<&'static str> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Some("loading eBPF programs needs root, or CAP_BPF and CAP_PERFMON");
            }
            cause = e.source();
        }
        None
    }
}
