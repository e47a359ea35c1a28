//! Where events come from. Each source runs on its own thread and sends
//! batches of events through an [`EventSender`] (into a bounded channel to
//! the dispatcher, or straight into it on the source's thread).
//!
//! - [`ebpf`]: live process and cgroup events from Vigil's eBPF programs;
//!   reports every drop, by reason;
//! - [`connector`]: live process events from the netlink process connector,
//!   with details read from /proc, where eBPF cannot load; drops when the
//!   pipeline is full, and reports every drop as an `events-lost` event;
//! - [`replay`]: a recorded file (msgpack or JSON lines), for tests and
//!   offline rule development; applies backpressure, never drops.
//!
//! The live sources apply the enrichment stage ([`crate::enrich`]) they are
//! opened with; the container runtimes' events come from
//! [`crate::watchers`].

pub(crate) mod connector;
pub mod ebpf;
pub mod replay;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use vigil_event::{Event, EventKind, KindSet};

/// Errors of the source layer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte offset {offset} (record {record}): {message}")]
    Corrupt { path: String, offset: u64, record: u64, message: String },
    #[error("{path}: unsupported replay format version {version} (this build reads version {supported})")]
    Version { path: String, version: u64, supported: u64 },
    #[error("the {0} source is not available: {1}")]
    Unavailable(&'static str, String),
    #[error("the ebpf source is not available: {}{}", crate::error_chain(.0), .0.hint().map(|h| format!(" ({h})")).unwrap_or_default())]
    Ebpf(ebpf::error::EbpfError),
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}

/// A stop request shared by the pipeline and sources.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the rules want now, as sources see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Not known yet (before the rules are loaded): send everything.
    Unknown,
    /// No rule is loaded: send nothing (a source still keeps its own
    /// state, e.g. the process tree, current).
    Nothing,
    /// These kinds.
    Kinds(KindSet),
}

/// The kinds some rule wants, shared by the dispatcher (which sets it when
/// rules change) and the sources (which skip the rest).
#[derive(Clone, Default)]
pub struct Interest(Arc<AtomicU16>);

/// The stored value of [`Wanted::Nothing`]: a bit that is no kind's.
const NOTHING: u16 = 1 << 15;
const _: () = assert!(EventKind::ALL.len() < 15);

impl Interest {
    /// Everything, until told otherwise.
    pub fn all() -> Self {
        Interest::default()
    }

    pub fn get(&self) -> Wanted {
        match self.0.load(Ordering::Relaxed) {
            0 => Wanted::Unknown,
            NOTHING => Wanted::Nothing,
            bits => Wanted::Kinds(KindSet(bits)),
        }
    }

    pub fn set(&self, wanted: Wanted) {
        let bits = match wanted {
            Wanted::Unknown => 0,
            Wanted::Nothing => NOTHING,
            Wanted::Kinds(k) if k == KindSet::EMPTY => NOTHING,
            Wanted::Kinds(k) => k.0,
        };
        self.0.store(bits, Ordering::Relaxed)
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        match self.get() {
            Wanted::Unknown => true,
            Wanted::Nothing => false,
            Wanted::Kinds(k) => k.contains(kind),
        }
    }
}

/// Why events were lost: each reason becomes its own `events-lost` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The pipeline was full (the source's own name is the reason given).
    PipelineFull,
    /// The eBPF ring buffer was full.
    RingFull,
    /// The kernel (or /proc) could not read the task.
    TaskUnreadable,
    /// A record in the eBPF ring buffer was malformed.
    MalformedRecord,
}

impl LossReason {
    const ALL: [LossReason; 4] =
        [LossReason::PipelineFull, LossReason::RingFull, LossReason::TaskUnreadable, LossReason::MalformedRecord];

    /// The reason as `events-lost` events and metrics give it; `source`
    /// names the pipeline-full case.
    pub fn text(self, source: &'static str) -> &'static str {
        match self {
            LossReason::PipelineFull => source,
            LossReason::RingFull => "ebpf: ring buffer full",
            LossReason::TaskUnreadable => "ebpf: task unreadable",
            LossReason::MalformedRecord => "ebpf: malformed record",
        }
    }

    /// The reason whose text is `text` (a source's name: pipeline full).
    fn parse(text: &str, source: &'static str) -> LossReason {
        Self::ALL.into_iter().find(|r| r.text(source) == text).unwrap_or(LossReason::PipelineFull)
    }
}

/// Takes a source's batches on the source's own thread (inline dispatch).
pub type Consumer = Box<dyn FnMut(Vec<Event>) -> Result<(), Closed> + Send>;

/// Where a source's batches go.
enum Route {
    /// Into the dispatcher's bounded channel, to another thread.
    Channel(Sender<Vec<Event>>),
    /// Straight into the consumer, on this thread: no hand-over, no wake-up
    /// of another thread, and no drop (a live source's kernel buffer holds
    /// what arrives meanwhile, and counts what it cannot).
    Direct(Consumer),
}

/// Where a source sends events.
pub struct EventSender {
    route: Route,
    /// Batches the dispatcher is done with, handed back so they are freed
    /// on the thread that allocated them: cross-thread frees cost the
    /// allocator far more (measured: ~40% of replay time).
    spent: Option<Receiver<Vec<Event>>>,
    source: &'static str,
    /// Events lost and not yet reported, by reason.
    pending_lost: Vec<(LossReason, u64)>,
}

/// The dispatcher is gone: the source should stop.
#[derive(Debug)]
pub struct Closed;

impl EventSender {
    pub fn new(tx: Sender<Vec<Event>>, source: &'static str) -> Self {
        EventSender { route: Route::Channel(tx), spent: None, source, pending_lost: Vec::new() }
    }

    /// Hands every batch to `consumer` on the calling thread.
    pub fn direct(consumer: Consumer, source: &'static str) -> Self {
        EventSender { route: Route::Direct(consumer), spent: None, source, pending_lost: Vec::new() }
    }

    /// Also receives spent batches back, and frees them here.
    pub fn with_spent(mut self, spent: Receiver<Vec<Event>>) -> Self {
        self.spent = Some(spent);
        self
    }

    fn free_spent(&self) {
        if let Some(spent) = &self.spent {
            while let Ok(batch) = spent.try_recv() {
                drop(batch);
            }
        }
    }

    /// Sends, waiting for room (for sources that can wait: replay).
    pub fn send(&mut self, batch: Vec<Event>) -> Result<(), Closed> {
        self.free_spent();
        let batch = self.with_lost(batch);
        match &mut self.route {
            Route::Channel(tx) => tx.send(batch).map_err(|_| Closed),
            Route::Direct(consume) => consume(batch),
        }
    }

    /// Sends without waiting (live sources): when the pipeline is full, the
    /// batch is dropped and counted, and an `events-lost` event goes out
    /// ahead of the next batch that fits.
    pub fn send_or_drop(&mut self, batch: Vec<Event>) -> Result<(), Closed> {
        self.free_spent();
        let n = batch.len() as u64;
        let batch = self.with_lost(batch);
        let tx = match &mut self.route {
            Route::Channel(tx) => tx,
            Route::Direct(consume) => return consume(batch),
        };
        match tx.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(b)) => {
                // The lost-events we may have prepended are retried next time.
                for e in b.iter().take_while(|e| e.kind == EventKind::EventsLost) {
                    if let Some(l) = &e.lost {
                        self.add_lost(LossReason::parse(&l.reason, self.source), l.count);
                    }
                }
                self.add_lost(LossReason::PipelineFull, n);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(Closed),
        }
    }

    /// Counts events the source lost without a reason of their own (the
    /// proc connector's socket overran): reported under the source's name.
    pub fn report_lost(&mut self, count: u64) {
        self.add_lost(LossReason::PipelineFull, count);
    }

    /// Counts lost events with a reason of their own; each reason becomes
    /// its own `events-lost` event.
    pub fn report_lost_because(&mut self, reason: LossReason, count: u64) {
        self.add_lost(reason, count);
    }

    /// Sends what is lost and not yet reported, waiting for room: a source
    /// calls this last, so that no loss goes unreported.
    pub fn flush_lost(&mut self) -> Result<(), Closed> {
        if self.pending_lost.is_empty() {
            return Ok(());
        }
        self.send(Vec::new())
    }

    fn add_lost(&mut self, reason: LossReason, count: u64) {
        if count == 0 {
            return;
        }
        match self.pending_lost.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += count,
            None => self.pending_lost.push((reason, count)),
        }
    }

    fn with_lost(&mut self, batch: Vec<Event>) -> Vec<Event> {
        if self.pending_lost.is_empty() {
            return batch;
        }
        let now = crate::time::now_ns();
        let mut out = Vec::with_capacity(batch.len() + self.pending_lost.len());
        for (reason, count) in self.pending_lost.drain(..) {
            let reason = reason.text(self.source);
            tracing::warn!(source = self.source, reason, lost = count, "events lost");
            out.push(Event::lost(count, reason, now));
        }
        out.extend(batch);
        out
    }
}

/// A source of events.
pub trait Source: Send {
    /// Short name, for logs and `events-lost` reasons.
    fn name(&self) -> &'static str;
    /// Produces events until done or stopped.
    fn run(self: Box<Self>, out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError>;
    /// True when the pipeline should dispatch on the source's own thread
    /// ([`EventSender::direct`]) rather than on a thread of its own.
    fn dispatches_inline(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_and_reported_ahead_of_the_next_batch() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut s = EventSender::new(tx, "test");
        let batch = || vec![Event::new(EventKind::ProcessExec); 3];
        s.send_or_drop(batch()).unwrap();
        s.send_or_drop(batch()).unwrap(); // full: 3 lost
        s.send_or_drop(batch()).unwrap(); // full: 3 more
        assert_eq!(rx.recv().unwrap().len(), 3);
        s.send_or_drop(batch()).unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].kind, EventKind::EventsLost);
        assert_eq!(got[0].lost.as_ref().unwrap().count, 6);
        assert_eq!(got[0].lost.as_ref().unwrap().reason, "test");
    }

    #[test]
    fn a_direct_route_hands_batches_over_with_the_losses_first() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = got.clone();
        let consumer = move |b| {
            into.lock().unwrap().push(b);
            Ok(())
        };
        let mut s = EventSender::direct(Box::new(consumer), "test");
        s.report_lost(2);
        s.send_or_drop(vec![Event::new(EventKind::ProcessExec)]).unwrap();
        s.send(vec![Event::new(EventKind::ProcessExit)]).unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][0].lost.as_ref().unwrap().count, 2);
        assert_eq!((got[0][1].kind, got[1][0].kind), (EventKind::ProcessExec, EventKind::ProcessExit));
    }

    #[test]
    fn a_dropped_lost_event_is_carried_not_forgotten() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut s = EventSender::new(tx, "test");
        s.send_or_drop(vec![Event::new(EventKind::ProcessExec)]).unwrap();
        s.report_lost(5);
        s.send_or_drop(vec![Event::new(EventKind::ProcessExec)]).unwrap(); // full: 5 + 1
        rx.recv().unwrap();
        s.send_or_drop(vec![Event::new(EventKind::ProcessExec)]).unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(got[0].lost.as_ref().unwrap().count, 6);
    }
}
