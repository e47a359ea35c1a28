//! Replay files: recorded events, read back at full speed or at the
//! recorded pace.
//!
//! Format, version 1 (the reader accepts both forms, told apart by the first byte):
//! - **msgpack** (what `vigil record` writes): a stream of msgpack values;
//!   the first is the header map `{"vigil-replay": 1}`; each next one is a
//!   `bin` value whose bytes are one event encoded as a msgpack map with the
//!   field names of `vigil_event::Event`. (The `bin` framing gives each
//!   record's length up front: exact offsets for errors, and each event
//!   decodes from one slice, several times faster than from a stream.)
//! - **JSON lines** (for hand-written fixtures): one event per line as JSON
//!   with the same field names; blank lines and lines starting with `#` are
//!   skipped; an optional first line `{"vigil-replay": 1}`.
//!
//! A corrupt or truncated file stops the replay with an error naming the
//! byte offset and record number; every event before it has been sent.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmp::decode::ValueReadError;
use serde::{Deserialize, Serialize};
use vigil_event::Event;

use super::{EventSender, Interest, Source, SourceError, Stop};

/// The replay format version this build reads and writes.
pub const VERSION: u64 = 1;
const BATCH: usize = 256;
/// Largest event record read (a corrupt length must not allocate gigabytes).
const MAX_RECORD: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    #[serde(rename = "vigil-replay")]
    version: u64,
}

pub struct ReplaySource {
    path: PathBuf,
    realtime: bool,
}

impl ReplaySource {
    pub fn new(path: impl Into<PathBuf>, realtime: bool) -> Self {
        ReplaySource { path: path.into(), realtime }
    }
}

impl Source for ReplaySource {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn run(self: Box<Self>, mut out: EventSender, stop: Stop, _interest: Interest) -> Result<(), SourceError> {
        let mut pacer = Pacer::new(self.realtime);
        let mut batch = Vec::with_capacity(BATCH);
        let result = read_events(&self.path, |event| {
            if stop.is_stopped() {
                return false;
            }
            if let Some(wait) = pacer.wait_for(&event) {
                if !batch.is_empty() && out.send(std::mem::take(&mut batch)).is_err() {
                    return false;
                }
                // In slices, so a stop request is honoured during long gaps.
                let until = Instant::now() + wait;
                while !stop.is_stopped() && Instant::now() < until {
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
                }
            }
            batch.push(event);
            if batch.len() == BATCH {
                return out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_ok();
            }
            true
        });
        if !batch.is_empty() {
            let _ = out.send(batch);
        }
        result
    }
}

/// Sleeps between events to keep their recorded spacing.
struct Pacer {
    enabled: bool,
    start: Option<(u64, Instant)>,
}

impl Pacer {
    fn new(enabled: bool) -> Self {
        Pacer { enabled, start: None }
    }
    fn wait_for(&mut self, e: &Event) -> Option<Duration> {
        if !self.enabled || e.time_ns == 0 {
            return None;
        }
        let (t0, i0) = *self.start.get_or_insert((e.time_ns, Instant::now()));
        let due = Duration::from_nanos(e.time_ns.saturating_sub(t0));
        due.checked_sub(i0.elapsed()).filter(|d| *d > Duration::from_micros(200))
    }
}

/// Reads every event of a replay file in order, calling `f` for each until
/// it returns false. Errors after some events have been read still report
/// where the file went wrong.
pub fn read_events(path: &Path, mut f: impl FnMut(Event) -> bool) -> Result<(), SourceError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| SourceError::Open { path: name.clone(), source })?;
    let mut reader = Counting { inner: BufReader::with_capacity(256 << 10, file), count: 0 };
    let first = loop {
        let buf = reader.inner.fill_buf().map_err(|e| SourceError::Io("replay", e))?;
        match buf.first() {
            None => return Ok(()),
            Some(b) if b.is_ascii_whitespace() => {
                reader.inner.consume(1);
                reader.count += 1;
            }
            Some(b) => break *b,
        }
    };
    if first == b'{' || first == b'#' { read_jsonl(&name, reader, f) } else { read_msgpack(&name, reader, &mut f) }
}

fn read_jsonl(
    name: &str,
    mut reader: Counting<BufReader<File>>,
    mut f: impl FnMut(Event) -> bool,
) -> Result<(), SourceError> {
    let mut line = String::new();
    let mut lineno = 0u64;
    loop {
        let offset = reader.count;
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| SourceError::Corrupt {
            path: name.into(),
            offset,
            record: lineno + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with("{\"vigil-replay\"") {
            let h: Header = serde_json::from_str(text).map_err(|e| corrupt(name, offset, lineno, &e, e.is_eof()))?;
            check_version(name, h.version)?;
            continue;
        }
        let event: Event = serde_json::from_str(text)
            .map_err(|e| corrupt(name, offset, lineno, format!("line {lineno}: {e}"), e.is_eof()))?;
        if !f(event) {
            return Ok(());
        }
    }
}

fn read_msgpack(
    name: &str,
    mut reader: Counting<BufReader<File>>,
    f: &mut impl FnMut(Event) -> bool,
) -> Result<(), SourceError> {
    let header: Header = rmp_serde::from_read(&mut reader).map_err(|e| corrupt(name, 0, 0, &e, rmp_serde_eof(&e)))?;
    check_version(name, header.version)?;
    let mut record = 0u64;
    let mut payload = Vec::new();
    loop {
        let offset = reader.count;
        match reader.inner.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(SourceError::Io("replay", e)),
        }
        record += 1;
        let len = rmp::decode::read_bin_len(&mut reader).map_err(|e| {
            let eof =
                matches!(&e, ValueReadError::InvalidMarkerRead(io) | ValueReadError::InvalidDataRead(io) if io_eof(io));
            corrupt(name, offset, record, &e, eof)
        })?;
        if len as usize > MAX_RECORD {
            return Err(corrupt(name, offset, record, format!("record of {len} bytes (at most {MAX_RECORD})"), false));
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(|e| corrupt(name, offset, record, &e, io_eof(&e)))?;
        // The whole record is here: a decode error is damage, not truncation.
        let event: Event = rmp_serde::from_slice(&payload).map_err(|e| corrupt(name, offset, record, e, false))?;
        if !f(event) {
            return Ok(());
        }
    }
}

fn corrupt(path: &str, offset: u64, record: u64, e: impl std::fmt::Display, truncated: bool) -> SourceError {
    let message = if truncated { format!("truncated ({e})") } else { e.to_string() };
    SourceError::Corrupt { path: path.into(), offset, record, message }
}

fn io_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
}

fn rmp_serde_eof(e: &rmp_serde::decode::Error) -> bool {
    use rmp_serde::decode::Error;
    matches!(e, Error::InvalidMarkerRead(io) | Error::InvalidDataRead(io) if io_eof(io))
}

fn check_version(path: &str, version: u64) -> Result<(), SourceError> {
    if version != VERSION {
        return Err(SourceError::Version { path: path.into(), version, supported: VERSION });
    }
    Ok(())
}

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.count += amt as u64;
        self.inner.consume(amt)
    }
}

/// Writes a replay file.
pub struct ReplayWriter<W: Write> {
    out: W,
    json: bool,
    scratch: Vec<u8>,
}

impl ReplayWriter<std::io::BufWriter<File>> {
    /// Creates `path`; JSON lines when it ends in `.jsonl` or `.json`, msgpack otherwise.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let json = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "json"));
        Self::new(std::io::BufWriter::new(File::create(path)?), json)
    }
}

impl<W: Write> ReplayWriter<W> {
    pub fn new(mut out: W, json: bool) -> std::io::Result<Self> {
        let header = Header { version: VERSION };
        if json {
            serde_json::to_writer(&mut out, &header)?;
            out.write_all(b"\n")?;
        } else {
            rmp_serde::encode::write_named(&mut out, &header).map_err(std::io::Error::other)?;
        }
        Ok(ReplayWriter { out, json, scratch: Vec::new() })
    }

    pub fn write(&mut self, e: &Event) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, e)?;
            self.out.write_all(b"\n")
        } else {
            self.scratch.clear();
            rmp_serde::encode::write_named(&mut self.scratch, e).map_err(std::io::Error::other)?;
            rmp::encode::write_bin_len(&mut self.out, self.scratch.len() as u32).map_err(std::io::Error::other)?;
            self.out.write_all(&self.scratch)
        }
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_event::{EventKind, Process};

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                time_ns: 1_000 + i as u64,
                process: Some(Process {
                    pid: i as u32,
                    exe: format!("/bin/x{i}"),
                    argv: vec!["x".into()],
                    ..Default::default()
                }),
                ..Event::new(EventKind::ProcessExec)
            })
            .collect()
    }

    fn write(path: &Path, evs: &[Event]) {
        let mut w = ReplayWriter::create(path).unwrap();
        for e in evs {
            w.write(e).unwrap();
        }
        w.finish().unwrap();
    }

    fn read_all(path: &Path) -> (Vec<Event>, Result<(), SourceError>) {
        let mut got = Vec::new();
        let r = read_events(path, |e| {
            got.push(e);
            true
        });
        (got, r)
    }

    #[test]
    fn msgpack_and_jsonl_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["r.msgpack", "r.jsonl"] {
            let path = dir.path().join(name);
            write(&path, &events(10));
            let (got, r) = read_all(&path);
            r.unwrap();
            assert_eq!(got, events(10), "{name}");
        }
    }

    #[test]
    fn truncated_msgpack_names_offset_and_keeps_earlier_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msgpack");
        write(&path, &events(10));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let (got, r) = read_all(&path);
        assert_eq!(got.len(), 9);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("record 10") && msg.contains("truncated") && msg.contains("offset"), "{msg}");
    }

    #[test]
    fn garbage_in_msgpack_is_an_error_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msgpack");
        write(&path, &events(3));
        let mut bytes = std::fs::read(&path).unwrap();
        let good_len = bytes.len() as u64;
        bytes.extend_from_slice(&[0xc1, 0xc1, 0xc1]); // 0xc1 is never valid msgpack
        std::fs::write(&path, &bytes).unwrap();
        let (got, r) = read_all(&path);
        assert_eq!(got.len(), 3);
        match r.unwrap_err() {
            SourceError::Corrupt { offset, record, .. } => {
                assert_eq!((offset, record), (good_len, 4))
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_huge_record_length_is_corruption_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msgpack");
        write(&path, &events(2));
        let mut bytes = std::fs::read(&path).unwrap();
        let good_len = bytes.len() as u64;
        bytes.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]); // bin32 of 4 GiB
        std::fs::write(&path, &bytes).unwrap();
        let (got, r) = read_all(&path);
        assert_eq!(got.len(), 2);
        match r.unwrap_err() {
            SourceError::Corrupt { offset, message, .. } => {
                assert_eq!(offset, good_len);
                assert!(message.contains("at most"), "{message}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn bad_jsonl_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "# fixture\n{\"kind\":\"process-exec\"}\n\n{\"kind\":\"process-exec\",\"bogus\":1}\n{\"kind\":\"process-exec\"}\n",
        )
        .unwrap();
        let (got, r) = read_all(&path);
        assert_eq!(got.len(), 1);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("line 4") && msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn a_cut_last_json_line_is_called_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "{\"kind\":\"process-exec\"}\n{\"kind\":\"process-ex").unwrap();
        let (got, r) = read_all(&path);
        assert_eq!(got.len(), 1);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("truncated") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "{\"vigil-replay\": 2}\n").unwrap();
        let (_, r) = read_all(&path);
        assert!(matches!(r, Err(SourceError::Version { version: 2, .. })));
    }
}
