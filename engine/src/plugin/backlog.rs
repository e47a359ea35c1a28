//! Batches kept for a rule while its instance restarts (after a fault, or
//! while its state is handed to its new version on another thread): the
//! rule sees them, in order, once it is back, so a hot swap loses no event.
//! A backlog is bounded; what does not fit is skipped and reported to the
//! rule as lost.

use std::collections::VecDeque;

use vigil_event::Event;

/// Most bytes (packed batches and their events) kept for one rule.
pub const MAX_BACKLOG_BYTES: usize = 32 << 20;
/// Most events kept for one rule.
pub const MAX_BACKLOG_EVENTS: usize = 100_000;

/// One batch waiting: packed as the rule gets it, and its events, which
/// its alerts are built from.
pub struct Waiting {
    pub batch: Vec<u8>,
    pub events: Vec<Event>,
}

#[derive(Default)]
pub struct Backlog {
    waiting: VecDeque<Waiting>,
    bytes: usize,
    events: usize,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Keeps a batch; false (nothing kept) when the backlog is full.
    pub fn push<'a>(&mut self, batch: &[u8], events: impl ExactSizeIterator<Item = &'a Event>) -> bool {
        // The events take about what they take packed.
        let bytes = batch.len() * 2;
        if self.bytes + bytes > MAX_BACKLOG_BYTES || self.events + events.len() > MAX_BACKLOG_EVENTS {
            return false;
        }
        let events: Vec<Event> = events.cloned().collect();
        self.bytes += bytes;
        self.events += events.len();
        self.waiting.push_back(Waiting { batch: batch.to_vec(), events });
        true
    }

    /// The oldest batch.
    pub fn pop(&mut self) -> Option<Waiting> {
        let w = self.waiting.pop_front()?;
        self.bytes -= w.batch.len() * 2;
        self.events -= w.events.len();
        Some(w)
    }

    /// Puts back the batch just popped (the rule was not ready after all).
    pub fn unpop(&mut self, w: Waiting) {
        self.bytes += w.batch.len() * 2;
        self.events += w.events.len();
        self.waiting.push_front(w);
    }

    /// Moves `other`'s batches after this one's.
    pub fn append(&mut self, other: &mut Backlog) {
        self.bytes += std::mem::take(&mut other.bytes);
        self.events += std::mem::take(&mut other.events);
        self.waiting.append(&mut other.waiting);
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::EventKind;

    use super::*;

    #[test]
    fn batches_come_back_in_order_and_a_full_backlog_refuses_more() {
        let e = Event::new(EventKind::ProcessExec);
        let mut b = Backlog::default();
        assert!(b.push(&[1], [&e].into_iter()));
        assert!(b.push(&[2], [&e, &e].into_iter()));
        let first = b.pop().unwrap();
        assert_eq!(first.batch, [1]);
        b.unpop(first);
        assert_eq!(b.pop().unwrap().batch, [1]);
        assert_eq!(b.pop().unwrap().events.len(), 2);
        assert!(b.pop().is_none() && b.is_empty());
        assert!(!b.push(&vec![0; MAX_BACKLOG_BYTES], [&e].into_iter()), "over the bytes");
        let many = vec![e; MAX_BACKLOG_EVENTS + 1];
        assert!(!b.push(&[0], many.iter()), "over the events");
        assert!(b.is_empty());
    }
}
