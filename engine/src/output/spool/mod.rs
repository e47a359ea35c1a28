//! A webhook's durable, bounded queue of encoded alerts, in a redb file.
//!
//! Alerts are appended (one crash-safe commit per batch, fsynced) before
//! anything is sent, and removed once the receiver acknowledged them, so
//! they survive outages, restarts and `kill -9`. Keys are increasing
//! sequence numbers: delivery is in order. When the spool would grow past
//! its bound, the oldest alerts are dropped and the drop is returned to the
//! caller, who counts and reports it; never the batch being delivered (the
//! last one [`Spool::peek`] returned, until [`Spool::remove_through`]): it
//! may arrive, and an alert that arrived must not be reported dropped. The
//! spool can so exceed its bound by one batch in flight. Removals are not
//! fsynced: after a crash, an acknowledged alert may be sent again
//! (at-least-once).

use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// Counted per alert on top of its bytes (key, page overhead).
const RECORD_OVERHEAD: u64 = 32;

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: redb::Error,
}

pub struct Spool {
    path: PathBuf,
    /// Replaced by a new file when the current one turns out damaged.
    db: RwLock<Database>,
    max_bytes: u64,
    /// Serializes writers and holds the next sequence number.
    next_seq: Mutex<u64>,
    len: AtomicU64,
    bytes: AtomicU64,
    /// The last sequence number of the batch being delivered (0: none).
    in_flight: AtomicU64,
    /// Damaged files moved aside (at open, or while running).
    recoveries: AtomicU64,
    /// Test seam: the next operation panics, as redb does on some damage.
    #[cfg(test)]
    panic_next: std::sync::atomic::AtomicBool,
}

/// The oldest alerts a full spool dropped: `count` records, the sequence
/// numbers `first..=last` (drops take the oldest after the batch in flight,
/// so they are one run of sequence numbers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub first: u64,
    pub last: u64,
}

impl Dropped {
    /// Whether the record numbered `seq` was dropped.
    pub fn holds(&self, seq: u64) -> bool {
        self.count > 0 && (self.first..=self.last).contains(&seq)
    }
}

/// What an append stored and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of the first record appended.
    pub first: u64,
    pub dropped: Dropped,
}

/// One spooled alert.
pub struct Record {
    pub seq: u64,
    /// Shared, so a transport hands it on (a NATS payload) without a copy.
    pub bytes: bytes::Bytes,
}

/// Whether `e` says the file is damaged (rather than busy, unreadable for
/// want of permission, or on a full disk).
fn is_damage(e: &redb::Error) -> bool {
    match e {
        redb::Error::DatabaseAlreadyOpen => false,
        // A file cut short or garbled reads as these; permissions, a full
        // disk or a missing directory are not the file's fault.
        redb::Error::Io(io) => {
            matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        }
        _ => true,
    }
}

/// What went wrong with a spool file: an error, or a panic inside redb.
enum OpenFailure {
    Error(redb::Error),
    Panicked(String),
}

impl Spool {
    /// Opens (or creates) the spool at `path`, readable by its owner only
    /// (0600). A file that is not a valid spool (redb refuses it, or panics
    /// on it) is moved aside (`<path>.corrupt-<unix time>`, logged) and a new
    /// one started: a damaged spool must not stop alerting. The second
    /// value says whether that happened.
    pub fn open(path: &Path, max_bytes: u64) -> Result<(Spool, bool), SpoolError> {
        let err = |source: redb::Error| SpoolError { path: path.to_path_buf(), source };
        let why = match Self::open_guarded(path, max_bytes) {
            Ok(spool) => return Ok((spool, false)),
            Err(OpenFailure::Error(e)) if !is_damage(&e) => return Err(err(e)),
            Err(OpenFailure::Error(e)) => e.to_string(),
            Err(OpenFailure::Panicked(p)) => format!("redb panicked reading it: {p}"),
        };
        move_aside(path, &why).map_err(|e| err(redb::Error::Io(e)))?;
        match Self::open_guarded(path, max_bytes) {
            Ok(spool) => {
                spool.recoveries.store(1, Ordering::Relaxed);
                Ok((spool, true))
            }
            Err(OpenFailure::Error(e)) => Err(err(e)),
            Err(OpenFailure::Panicked(p)) => Err(err(redb::Error::Io(std::io::Error::other(p)))),
        }
    }

    /// Runs `op`; when it fails because the file is damaged, or redb
    /// panics inside it, the file is moved aside, a new one started, and
    /// `op` run once more on it: alerts keep flowing. The alerts in the
    /// damaged file stay there (logged), undelivered.
    fn guarded<T>(&self, op: impl Fn() -> Result<T, SpoolError>) -> Result<T, SpoolError> {
        let first = || {
            #[cfg(test)]
            if self.panic_next.swap(false, Ordering::Relaxed) {
                panic!("injected");
            }
            op()
        };
        let why = match std::panic::catch_unwind(AssertUnwindSafe(first)) {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !is_damage(&e.source) => return Err(e),
            Ok(Err(e)) => e.source.to_string(),
            Err(panic) => format!("redb panicked: {}", panic_text(&*panic)),
        };
        self.recover(&why)?;
        op()
    }

    /// Moves the damaged file aside and starts a new, empty one in its place.
    fn recover(&self, why: &str) -> Result<(), SpoolError> {
        let _writers = self.lock();
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let lost = self.len();
        move_aside(&self.path, why).map_err(|e| self.err(redb::Error::Io(e)))?;
        let fresh = Database::create(&self.path).map_err(|e| self.err(e))?;
        restrict(&self.path).map_err(|e| self.err(e))?;
        let tx = fresh.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        *db = fresh;
        self.len.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        self.recoveries.fetch_add(1, Ordering::Relaxed);
        tracing::error!(spool = %self.path.display(), alerts = lost, "the spool's alerts stay in the damaged file, undelivered; new alerts go to the new spool");
        Ok(())
    }

    /// Damaged spool files moved aside, at open or while running.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    fn db(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens and loads the spool, a panic inside redb caught as a failure.
    fn open_guarded(path: &Path, max_bytes: u64) -> Result<Spool, OpenFailure> {
        let opened = std::panic::catch_unwind(|| -> Result<Spool, redb::Error> {
            let db = Database::create(path)?;
            restrict(path)?;
            let spool = Spool {
                path: path.to_path_buf(),
                db: RwLock::new(db),
                max_bytes,
                next_seq: Mutex::new(1),
                len: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
                #[cfg(test)]
                panic_next: std::sync::atomic::AtomicBool::new(false),
            };
            spool.load()?;
            Ok(spool)
        });
        match opened {
            Ok(r) => r.map_err(OpenFailure::Error),
            Err(panic) => Err(OpenFailure::Panicked(panic_text(&*panic))),
        }
    }

    fn load(&self) -> Result<(), redb::Error> {
        // Creates the table on first use.
        let tx = self.db().begin_write()?;
        tx.open_table(ALERTS)?;
        tx.commit()?;
        let rx = self.db().begin_read()?;
        let table = rx.open_table(ALERTS)?;
        let (mut len, mut bytes, mut last) = (0u64, 0u64, 0u64);
        for row in table.iter()? {
            let (k, v) = row?;
            len += 1;
            bytes += v.value().len() as u64 + RECORD_OVERHEAD;
            last = k.value();
        }
        self.len.store(len, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        *self.lock() = last + 1;
        if len > 0 {
            tracing::info!(spool = %self.path.display(), alerts = len, bytes, "spool holds alerts from an earlier run; delivering them first");
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.next_seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, source: impl Into<redb::Error>) -> SpoolError {
        SpoolError { path: self.path.clone(), source: source.into() }
    }

    /// Alerts waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting (approximate: payload plus a per-alert overhead).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Appends `records` durably; returns their first sequence number and
    /// which of the oldest alerts were dropped to stay within the bound.
    pub fn append<'a>(&self, records: impl IntoIterator<Item = &'a [u8]>) -> Result<Appended, SpoolError> {
        let records: Vec<&[u8]> = records.into_iter().collect();
        self.guarded(|| self.append_once(&records))
    }

    fn append_once(&self, records: &[&[u8]]) -> Result<Appended, SpoolError> {
        let mut next = self.lock();
        let (mut seq, mut len, mut bytes) = (*next, self.len(), self.bytes());
        let first = seq;
        let dropped;
        let tx = self.db().begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            // Through a cursor at the table's end: redb buffers a run of
            // ascending inserts and builds the leaves once, where an insert
            // each rewrote its leaf (measured: memmove was the output
            // thread's largest cost with a spooled output, BENCHMARKS.md).
            let mut end = table.upper_bound_mut(Bound::<u64>::Unbounded).map_err(|e| self.err(e))?;
            for &r in records {
                end.insert_before(seq, r).map_err(|e| self.err(e))?;
                seq += 1;
                len += 1;
                bytes += r.len() as u64 + RECORD_OVERHEAD;
            }
            end.close().map_err(|e| self.err(e))?;
            // Never the newest: an alert larger than the bound still goes.
            dropped = self.drop_oldest(&mut table, &mut len, &mut bytes, self.max_bytes, true)?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        *next = seq;
        self.len.store(len, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(Appended { first, dropped })
    }

    /// Drops the oldest alerts until a record of `size` bytes fits within
    /// the bound; returns which were dropped.
    pub fn make_room(&self, size: u64) -> Result<Dropped, SpoolError> {
        self.guarded(|| self.make_room_once(size))
    }

    fn make_room_once(&self, size: u64) -> Result<Dropped, SpoolError> {
        let _next = self.lock();
        let (mut len, mut bytes) = (self.len(), self.bytes());
        let budget = self.max_bytes.saturating_sub(size + RECORD_OVERHEAD);
        if bytes <= budget {
            return Ok(Dropped::default());
        }
        let tx = self.db().begin_write().map_err(|e| self.err(e))?;
        let dropped = {
            let mut table = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            self.drop_oldest(&mut table, &mut len, &mut bytes, budget, false)?
        };
        tx.commit().map_err(|e| self.err(e))?;
        self.len.store(len, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Removes the oldest alerts after the batch in flight while more than
    /// `budget` bytes are stored (and, with `keep_newest`, never the newest);
    /// returns which it removed.
    fn drop_oldest(
        &self,
        table: &mut redb::Table<u64, &[u8]>,
        len: &mut u64,
        bytes: &mut u64,
        budget: u64,
        keep_newest: bool,
    ) -> Result<Dropped, SpoolError> {
        let after = self.in_flight.load(Ordering::Relaxed) + 1;
        let newest = table.last().map_err(|e| self.err(e))?.map(|(k, _)| k.value());
        let mut dropped = Dropped::default();
        while *bytes > budget && *len > 0 {
            let victim = match table.range(after..).map_err(|e| self.err(e))?.next() {
                Some(row) => row.map_err(|e| self.err(e))?.0.value(),
                None => break,
            };
            if keep_newest && Some(victim) == newest {
                break;
            }
            let Some(v) = table.remove(victim).map_err(|e| self.err(e))? else { break };
            *bytes -= v.value().len() as u64 + RECORD_OVERHEAD;
            *len -= 1;
            if dropped.count == 0 {
                dropped.first = victim;
            }
            dropped.last = victim;
            dropped.count += 1;
        }
        Ok(dropped)
    }

    /// The oldest alerts, at most `max_alerts` of them and `max_bytes` in
    /// all (at least one, whatever its size): the batch in flight, kept from
    /// drops until [`Self::remove_through`]. One delivery task peeks.
    pub fn peek(&self, max_alerts: usize, max_bytes: u64) -> Result<Vec<Record>, SpoolError> {
        self.guarded(|| self.peek_once(max_alerts, max_bytes))
    }

    fn peek_once(&self, max_alerts: usize, max_bytes: u64) -> Result<Vec<Record>, SpoolError> {
        // Under the writers' lock: no append drops what is read here before
        // it is marked in flight.
        let _writers = self.lock();
        let rx = self.db().begin_read().map_err(|e| self.err(e))?;
        let table = rx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut total = 0u64;
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let v = v.value();
            if !out.is_empty() && (out.len() >= max_alerts || total + v.len() as u64 > max_bytes) {
                break;
            }
            total += v.len() as u64;
            out.push(Record { seq: k.value(), bytes: bytes::Bytes::copy_from_slice(v) });
        }
        self.in_flight.store(out.last().map_or(0, |r| r.seq), Ordering::Relaxed);
        Ok(out)
    }

    /// Removes every alert up to and including `seq` (delivered, or
    /// rejected for good).
    pub fn remove_through(&self, seq: u64) -> Result<(), SpoolError> {
        self.guarded(|| self.remove_through_once(seq))
    }

    fn remove_through_once(&self, seq: u64) -> Result<(), SpoolError> {
        let _writer = self.lock();
        let mut tx = self.db().begin_write().map_err(|e| self.err(e))?;
        // A crash before the next durable commit re-sends these: allowed.
        tx.set_durability(Durability::None).map_err(|e| self.err(e))?;
        let (mut removed, mut freed) = (0u64, 0u64);
        {
            let mut table = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            let gone = table.extract_from_if(..=seq, |_, _| true).map_err(|e| self.err(e))?;
            for row in gone {
                let (_, v) = row.map_err(|e| self.err(e))?;
                removed += 1;
                freed += v.value().len() as u64 + RECORD_OVERHEAD;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Makes earlier removals durable (at shutdown), so a clean restart
    /// does not re-send.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let _writer = self.lock();
        let tx = self.db().begin_write().map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Entries actually in the file (for tests).
    pub fn count_stored(&self) -> Result<u64, SpoolError> {
        let rx = self.db().begin_read().map_err(|e| self.err(e))?;
        let table = rx.open_table(ALERTS).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }
}

/// Moves a damaged spool file aside (`<path>.corrupt-<unix time>`), logged.
fn move_aside(path: &Path, why: &str) -> std::io::Result<()> {
    let aside = path.with_extension(format!("corrupt-{}", crate::time::now_ns() / 1_000_000_000));
    tracing::error!(spool = %path.display(), moved_to = %aside.display(), error = %why, "spool file is damaged; moved aside, starting an empty spool");
    std::fs::rename(path, &aside)
}

/// What a caught panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
        .to_string()
}

/// Owner-only permissions (0600) on the spool file: alerts can hold secrets.
fn restrict(path: &Path) -> Result<(), redb::Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(redb::Error::Io)
}

#[cfg(test)]
mod tests;
