//! The packed encoding, version 1: how events cross from the host into a
//! rule. The layout is documented on `packed-batch` in `wit/rules.wit`.
//!
//! The host encodes each event once ([`encode_event`]) and assembles batches
//! from the records ([`assemble_batch`]); event records are
//! position-independent (their offsets are relative to the record), so one
//! record serves every batch it appears in. Rules read the batch through
//! [`BatchView`] / [`EventView`], which borrow from the bytes and decode only
//! the fields a rule asks for.

mod encode;
mod lists;
#[cfg(test)]
mod tests;
mod view;

pub use encode::{assemble_batch, encode_batch, encode_event};
pub use lists::{
    AncestorView, Ancestors, Entries, Entry, LabelsView, NetworkView, NetworksView, PortView, PortsView, Strings,
};
pub use view::*;

/// First four bytes of a batch.
pub const MAGIC: [u8; 4] = *b"VGB2";
/// Size of an event record's fixed header.
pub const HEADER_LEN: usize = 416;
/// The header's size before interface 0.2.2 added container networks and
/// copy events (bytes 384..416).
pub const HEADER_LEN_0_2_1: usize = 384;
/// The header's size before interface 0.2.1 added the exec facts (bytes
/// 288..384): a rule built for 0.2.0 reads only below it.
pub const HEADER_LEN_0_2_0: usize = 288;

// Field offsets in the fixed header.
pub(crate) const KIND: usize = 0;
pub(crate) const FLAGS: usize = 1;
pub(crate) const RUNTIME: usize = 2;
pub(crate) const EXTRA_FLAGS: usize = 3;
pub(crate) const EXIT_CODE: usize = 4;
pub(crate) const ID: usize = 8;
pub(crate) const TIME: usize = 16;
pub(crate) const PID: usize = 24;
pub(crate) const TGID: usize = 28;
pub(crate) const PPID: usize = 32;
pub(crate) const UID: usize = 36;
pub(crate) const GID: usize = 40;
pub(crate) const CONTAINER_PID: usize = 44;
pub(crate) const START_TIME: usize = 48;
pub(crate) const CGROUP_ID: usize = 56;
pub(crate) const NAMESPACES: usize = 64;
pub(crate) const STARTED_AT: usize = 120;
pub(crate) const LOST_COUNT: usize = 128;
pub(crate) const CGROUP_EVENT_ID: usize = 136;
pub(crate) const STRINGS: usize = 144;
pub(crate) const LISTS: usize = 256;
// Since 0.2.1.
pub(crate) const LOGIN_UID: usize = 288;
pub(crate) const SESSION_ID: usize = 292;
pub(crate) const TTY: usize = 296;
pub(crate) const EXE_MODE: usize = 300;
pub(crate) const EXE_INODE: usize = 304;
pub(crate) const EXE_DEVICE: usize = 312;
pub(crate) const PROCESS_FLAGS: usize = 320;
pub(crate) const STRINGS_2: usize = 328;
// Since 0.2.2.
pub(crate) const CONTAINER_FLAGS: usize = 376;
pub(crate) const LISTS_2: usize = 384;

// container flags (u32 at CONTAINER_FLAGS)
pub(crate) const C_RUNS_AS_ROOT_KNOWN: u32 = 1;
pub(crate) const C_RUNS_AS_ROOT: u32 = 2;

// process flags (u32 at PROCESS_FLAGS)
pub(crate) const P_CWD_TRUNCATED: u32 = 1;
pub(crate) const P_TTY: u32 = 2;
pub(crate) const P_TTY_PTY: u32 = 4;
pub(crate) const P_EXE_UPPER_LAYER: u32 = 8;
pub(crate) const P_EXE_MEMFD: u32 = 16;
pub(crate) const P_EXE_UNLINKED: u32 = 32;

// flags
pub(crate) const F_PROCESS: u8 = 1;
pub(crate) const F_CONTAINER: u8 = 2;
pub(crate) const F_POD: u8 = 4;
pub(crate) const F_CGROUP: u8 = 8;
pub(crate) const F_EXIT_CODE: u8 = 16;
pub(crate) const F_LOST: u8 = 32;
pub(crate) const F_ARGV_TRUNCATED: u8 = 64;
pub(crate) const F_PRIVILEGED: u8 = 128;
// extra flags
pub(crate) const X_POD_SANDBOX: u8 = 1;
pub(crate) const X_TRUNCATED: u8 = 2;

/// The string slots, in layout order.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Str {
    Comm = 0,
    Exe,
    Cwd,
    ContainerId,
    ContainerName,
    Image,
    ImageDigest,
    PodName,
    PodNamespace,
    PodUid,
    CgroupPath,
    LostReason,
    User,
    Group,
    // Since 0.2.1, in the second table (at STRINGS_2).
    Script,
    LoginUser,
    TtyName,
    // Since 0.2.2.
    NetworkMode,
    CopyPath,
}

impl Str {
    /// Where the slot's (offset, len) lies in the header.
    pub(crate) fn at(self) -> usize {
        let i = self as usize;
        if i < 14 { STRINGS + 8 * i } else { STRINGS_2 + 8 * (i - 14) }
    }
}

/// The list slots, in layout order.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum List {
    Argv = 0,
    Ancestry,
    ContainerLabels,
    PodLabels,
    // Since 0.2.2, in the second table (at LISTS_2).
    Networks,
    Ports,
    PodIps,
}

impl List {
    /// Where the list's (offset, count) lies in the header.
    pub(crate) fn at(self) -> usize {
        let i = self as usize;
        if i < 4 { LISTS + 8 * i } else { LISTS_2 + 8 * (i - 4) }
    }
}

pub(crate) const ANCESTOR_LEN: usize = 28;
/// A network: name, ip, ipv6, mac, gateway refs · prefix-len:u8 ·
/// ipv6-prefix-len:u8 · 6 reserved.
pub(crate) const NETWORK_LEN: usize = 48;
/// A port: container-port:u16 · host-port:u16 · protocol ref · host-ip ref · 4 reserved.
pub(crate) const PORT_LEN: usize = 24;
pub(crate) const LABEL_LEN: usize = 16;
