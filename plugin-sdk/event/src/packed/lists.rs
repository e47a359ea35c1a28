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

/// Iterator over a packed list of strings.
#[derive(Clone, Debug)]
pub struct Strings<'a> {
    pub(super) rec: &'a [u8],
    pub(super) off: usize,
    pub(super) count: usize,
    pub(super) i: usize,
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.i >= self.count {
            return None;
        }
        let s = read_str(self.rec, self.off + 8 * self.i);
        self.i += 1;
        Some(s)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Strings<'_> {}

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
#[derive(Clone)]
pub struct Ancestors<'a> {
    pub(super) rec: &'a [u8],
    pub(super) off: usize,
    pub(super) count: usize,
    pub(super) i: usize,
}

impl<'a> Iterator for Ancestors<'a> {
    type Item = AncestorView<'a>;
    fn next(&mut self) -> Option<AncestorView<'a>> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + ANCESTOR_LEN * self.i;
        self.i += 1;
        let (off, count) = list_bounds(self.rec, at + 20, 8);
        Some(AncestorView {
            pid: read_u32(self.rec, at),
            comm: read_str(self.rec, at + 4),
            exe: read_str(self.rec, at + 12),
            argv: Strings { rec: self.rec, off, count, i: 0 },
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Ancestors<'_> {}

/// Iterator over packed key/value labels.
#[derive(Clone)]
pub struct LabelsView<'a> {
    pub(super) rec: &'a [u8],
    pub(super) off: usize,
    pub(super) count: usize,
    pub(super) i: usize,
}

impl<'a> Iterator for LabelsView<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + LABEL_LEN * self.i;
        self.i += 1;
        Some((read_str(self.rec, at), read_str(self.rec, at + 8)))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for LabelsView<'_> {}

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
#[derive(Clone)]
pub struct NetworksView<'a> {
    pub(super) rec: &'a [u8],
    pub(super) off: usize,
    pub(super) count: usize,
    pub(super) i: usize,
}

impl<'a> Iterator for NetworksView<'a> {
    type Item = NetworkView<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + NETWORK_LEN * self.i;
        self.i += 1;
        let byte = |k: usize| self.rec.get(at + k).copied().unwrap_or(0);
        Some(NetworkView {
            name: read_str(self.rec, at),
            ip: read_str(self.rec, at + 8),
            ipv6: read_str(self.rec, at + 16),
            mac: read_str(self.rec, at + 24),
            gateway: read_str(self.rec, at + 32),
            prefix_len: byte(40),
            ipv6_prefix_len: byte(41),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for NetworksView<'_> {}

/// One published port of a container (see [`crate::model::Port`]).
#[derive(Clone, Debug)]
pub struct PortView<'a> {
    pub container_port: u16,
    pub protocol: &'a str,
    pub host_ip: &'a str,
    pub host_port: u16,
}

/// Iterator over a container's published ports.
#[derive(Clone)]
pub struct PortsView<'a> {
    pub(super) rec: &'a [u8],
    pub(super) off: usize,
    pub(super) count: usize,
    pub(super) i: usize,
}

impl<'a> Iterator for PortsView<'a> {
    type Item = PortView<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + PORT_LEN * self.i;
        self.i += 1;
        let word = read_u32(self.rec, at);
        Some(PortView {
            container_port: word as u16,
            host_port: (word >> 16) as u16,
            protocol: read_str(self.rec, at + 4),
            host_ip: read_str(self.rec, at + 12),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for PortsView<'_> {}
