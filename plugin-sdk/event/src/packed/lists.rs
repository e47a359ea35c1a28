//! The packed encoding's lists (argv, ancestry, labels, networks, ports)
//! and the bounds-checked reads every view is built on.

use super::*;

// Every read is bounds-checked with checked arithmetic: bad bytes read as
// 0 or "", never a panic (also on wasm32, where usize is 32 bits).

pub(super) fn read_u32(b: &[u8], at: usize) -> u32 {
    at.checked_add(4).and_then(|end| b.get(at..end)).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()))
}

pub(super) fn read_u64(b: &[u8], at: usize) -> u64 {
    at.checked_add(8).and_then(|end| b.get(at..end)).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// Reads the string referenced at `at`; "" when out of bounds or not UTF-8.
pub(super) fn read_str(rec: &[u8], at: usize) -> &str {
    let off = read_u32(rec, at) as usize;
    let len = read_u32(rec, at.saturating_add(4)) as usize;
    rec.get(off..off.saturating_add(len)).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// A list's (offset, count), the count cut to the entries the bytes hold,
/// so iteration stays in bounds and ends.
pub(super) fn list_bounds(rec: &[u8], at: usize, entry_len: usize) -> (usize, usize) {
    let off = read_u32(rec, at) as usize;
    let count = read_u32(rec, at + 4) as usize;
    (off, count.min(rec.len().saturating_sub(off) / entry_len))
}

/// How one entry of a packed list is read.
pub trait Entry<'a> {
    /// Bytes of one entry in the list's table.
    const LEN: usize;
    /// The entry whose table slot starts at `at` in `rec`.
    fn read(rec: &'a [u8], at: usize) -> Self;
}

/// Iterator over a packed list (argv, ancestry, labels, networks, ports),
/// each entry read from the bytes only when reached.
pub struct Entries<'a, T> {
    rec: &'a [u8],
    off: usize,
    count: usize,
    i: usize,
    entry: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T: Entry<'a>> Entries<'a, T> {
    /// The list whose (offset, count) lies at `at` in `rec`.
    pub(super) fn at(rec: &'a [u8], at: usize) -> Self {
        let (off, count) = list_bounds(rec, at, T::LEN);
        Entries { rec, off, count, i: 0, entry: std::marker::PhantomData }
    }
}

impl<T> Clone for Entries<'_, T> {
    fn clone(&self) -> Self {
        Entries { entry: std::marker::PhantomData, ..*self }
    }
}

impl<T> std::fmt::Debug for Entries<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("count", &self.count).field("next", &self.i).finish()
    }
}

impl<'a, T: Entry<'a>> Iterator for Entries<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + T::LEN * self.i;
        self.i += 1;
        Some(T::read(self.rec, at))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl<'a, T: Entry<'a>> ExactSizeIterator for Entries<'a, T> {}

/// Iterator over a packed list of strings.
pub type Strings<'a> = Entries<'a, &'a str>;

impl<'a> Entry<'a> for &'a str {
    const LEN: usize = 8;
    fn read(rec: &'a [u8], at: usize) -> Self {
        read_str(rec, at)
    }
}

/// One ancestor of a process.
#[derive(Clone, Debug)]
pub struct AncestorView<'a> {
    /// Its process id.
    pub pid: u32,
    /// Its task name.
    pub comm: &'a str,
    /// Its executable path.
    pub exe: &'a str,
    /// What it last executed, with its arguments.
    pub argv: Strings<'a>,
}

/// Iterator over a process's ancestors, parent first.
pub type Ancestors<'a> = Entries<'a, AncestorView<'a>>;

impl<'a> Entry<'a> for AncestorView<'a> {
    const LEN: usize = ANCESTOR_LEN;
    fn read(rec: &'a [u8], at: usize) -> Self {
        AncestorView {
            pid: read_u32(rec, at),
            comm: read_str(rec, at + 4),
            exe: read_str(rec, at + 12),
            argv: Entries::at(rec, at + 20),
        }
    }
}

/// Iterator over packed key/value labels.
pub type LabelsView<'a> = Entries<'a, (&'a str, &'a str)>;

impl<'a> Entry<'a> for (&'a str, &'a str) {
    const LEN: usize = LABEL_LEN;
    fn read(rec: &'a [u8], at: usize) -> Self {
        (read_str(rec, at), read_str(rec, at + 8))
    }
}

/// One network of a container (see [`crate::model::Network`]).
#[derive(Clone, Debug)]
pub struct NetworkView<'a> {
    pub name: &'a str,
    pub ip: &'a str,
    pub prefix_len: u8,
    pub ipv6: &'a str,
    pub ipv6_prefix_len: u8,
    pub mac: &'a str,
    pub gateway: &'a str,
}

/// Iterator over a container's networks.
pub type NetworksView<'a> = Entries<'a, NetworkView<'a>>;

impl<'a> Entry<'a> for NetworkView<'a> {
    const LEN: usize = NETWORK_LEN;
    fn read(rec: &'a [u8], at: usize) -> Self {
        let byte = |k: usize| rec.get(at + k).copied().unwrap_or(0);
        NetworkView {
            name: read_str(rec, at),
            ip: read_str(rec, at + 8),
            ipv6: read_str(rec, at + 16),
            mac: read_str(rec, at + 24),
            gateway: read_str(rec, at + 32),
            prefix_len: byte(40),
            ipv6_prefix_len: byte(41),
        }
    }
}

/// One published port of a container (see [`crate::model::Port`]).
#[derive(Clone, Debug)]
pub struct PortView<'a> {
    pub container_port: u16,
    pub protocol: &'a str,
    pub host_ip: &'a str,
    pub host_port: u16,
}

/// Iterator over a container's published ports.
pub type PortsView<'a> = Entries<'a, PortView<'a>>;

impl<'a> Entry<'a> for PortView<'a> {
    const LEN: usize = PORT_LEN;
    fn read(rec: &'a [u8], at: usize) -> Self {
        let word = read_u32(rec, at);
        PortView {
            container_port: word as u16,
            host_port: (word >> 16) as u16,
            protocol: read_str(rec, at + 4),
            host_ip: read_str(rec, at + 12),
        }
    }
}
