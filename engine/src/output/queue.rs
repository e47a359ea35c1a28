//! The queue from the dispatcher to the outputs, bounded in batches (the
//! channel's capacity) and in bytes ([`MAX_QUEUED_BYTES`]): however large
//! the alerts (a message, argv and labels at their bounds make one of
//! ~200 KiB), what waits for the outputs stays within a fixed memory. A
//! full queue makes the dispatcher wait, as a full channel does; a batch
//! alone larger than the bound still goes when the queue is empty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::alert::Alert;

/// Bytes of alerts (as [`Alert::approx_bytes`] counts them) waiting for the outputs at most.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Held {
    bytes: Mutex<usize>,
    room: Condvar,
    closed: AtomicBool,
    /// The dispatcher has waited since the queue last had room at once
    /// (logged once per stall, not per batch).
    stalled: AtomicBool,
}

impl Held {
    fn bytes(&self) -> MutexGuard<'_, usize> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The dispatcher's end.
pub struct AlertSender {
    tx: Sender<(Vec<Alert>, usize)>,
    held: Arc<Held>,
}

/// The outputs' end.
pub struct AlertReceiver {
    rx: Receiver<(Vec<Alert>, usize)>,
    held: Arc<Held>,
}

/// The outputs are gone.
#[derive(Debug)]
pub struct Closed;

/// A queue of at most `batches` batches and [`MAX_QUEUED_BYTES`] bytes.
pub fn alert_queue(batches: usize) -> (AlertSender, AlertReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(batches);
    let held = Arc::new(Held::default());
    (AlertSender { tx, held: held.clone() }, AlertReceiver { rx, held })
}

impl AlertSender {
    /// Queues `alerts`, waiting while the queue holds too many bytes.
    pub fn send(&self, alerts: Vec<Alert>) -> Result<(), Closed> {
        let bytes = alerts.iter().map(Alert::approx_bytes).sum();
        let mut held = self.held.bytes();
        let full =
            |held: usize| held > 0 && held + bytes > MAX_QUEUED_BYTES && !self.held.closed.load(Ordering::Relaxed);
        if full(*held) {
            if !self.held.stalled.swap(true, Ordering::Relaxed) {
                tracing::warn!(queued_bytes = *held, "the outputs are behind: rules wait for the alert queue to drain");
            }
            while full(*held) {
                held =
                    self.held.room.wait_timeout(held, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
            }
        } else if self.held.stalled.swap(false, Ordering::Relaxed) {
            tracing::info!("the outputs caught up: the alert queue has room again");
        }
        *held += bytes;
        drop(held);
        self.tx.send((alerts, bytes)).map_err(|_| Closed)
    }
}

impl AlertReceiver {
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<Alert>, RecvTimeoutError> {
        let (alerts, bytes) = self.rx.recv_timeout(timeout)?;
        *self.held.bytes() -= bytes;
        self.held.room.notify_all();
        Ok(alerts)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.held.closed.store(true, Ordering::Relaxed);
        self.held.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(message_bytes: usize) -> Alert {
        Alert {
            id: String::new(),
            time: String::new(),
            rule: "r".into(),
            rule_version: String::new(),
            priority: crate::alert::Priority::Warning,
            output: "x".repeat(message_bytes),
            source: String::new(),
            hostname: String::new(),
            tags: vec![],
            output_fields: Default::default(),
        }
    }

    #[test]
    fn a_sender_waits_while_the_queue_holds_too_many_bytes() {
        let (tx, rx) = alert_queue(1024);
        let big = || vec![alert(MAX_QUEUED_BYTES / 2)];
        tx.send(big()).unwrap();
        // Half the bound and a bit more: the next one must wait.
        tx.send(vec![alert(1)]).unwrap();
        let sent = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                tx.send(big()).unwrap();
                sent.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(200));
            assert!(!sent.load(Ordering::SeqCst), "over the bytes: the third waits");
            rx.recv_timeout(Duration::from_secs(1)).unwrap();
        });
        assert!(sent.load(Ordering::SeqCst), "room made: it went");
        // Alone, a batch larger than the bound still goes.
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(1)).unwrap();
        }
        tx.send(vec![alert(MAX_QUEUED_BYTES * 2)]).unwrap();
        drop(rx);
        tx.send(big()).unwrap_err();
    }
}
