//! Test rule `hostile`: a rule written against `wit/rules.wit` with
//! wit-bindgen alone, doing on purpose what a hostile rule would. Its
//! config (`{"mode": "...", ...}`) picks the attack:
//!
//! - `giant`: returns ~24 MiB of JSON per call (alerts with many empty tags);
//! - `flood`: returns 100 well-formed alerts per event of the batch;
//! - `bad-index`: alerts naming events outside the batch;
//! - `log-injection`: log lines and alert messages with newlines and
//!   terminal escapes that forge daemon log lines;
//! - `slow`: burns `busy_us` microseconds of CPU per batch, within its deadline;
//! - `slow-init`: burns `init_ms` in `init`, and traps every `trap_every`th
//!   batch, so it is rebuilt (and its `init` run again) while events flow;
//! - `quiet` (default): does nothing.
//!
//! Whatever its mode, it alerts on each `events-lost` event it gets with
//! the count and reason (what it missed while throttled or quarantined).
//!
//! Its id is always `hostile`: two copies of it in one directory claim the
//! same id, as an impostor would.
//!
//! Only a component: built natively (`cargo test --workspace`) it is empty.
#![cfg(target_family = "wasm")]

wit_bindgen::generate!({ path: "../../../wit", world: "rule" });

use std::cell::Cell;

use exports::vigil::rules::detector::Guest;
use vigil::rules::host::{LogLevel, log, now_ns};

struct Hostile;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Quiet,
    Giant,
    Flood,
    BadIndex,
    LogInjection,
    Slow,
    SlowInit,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Quiet) };
    static BUSY_US: Cell<u64> = const { Cell::new(0) };
    static TRAP_EVERY: Cell<u64> = const { Cell::new(0) };
    static BATCHES: Cell<u64> = const { Cell::new(0) };
}

/// The number after `"key":` in a JSON text (enough for this fixture's config).
fn number(config: &str, key: &str) -> Option<u64> {
    let at = config.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = config[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Burns CPU for `us` microseconds of the host's clock.
fn burn(us: u64) {
    let until = now_ns() + us * 1_000;
    let mut x = 0u64;
    while now_ns() < until {
        for i in 0..1_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u32_at(bytes, at) as u64 | (u32_at(bytes, at + 4) as u64) << 32
}

/// The number of events in a packed batch (its header: magic, count).
fn events(batch: &[u8]) -> u32 {
    u32_at(batch, 4)
}

/// Index of `events-lost` in the WIT `event-kind` enum.
const EVENTS_LOST: u8 = 9;

/// An alert for each `events-lost` event of the batch: "lost <count> <reason>".
fn lost_alerts(batch: &[u8]) -> Vec<String> {
    let mut alerts = Vec::new();
    for i in 0..events(batch) as usize {
        let at = u32_at(batch, 8 + 4 * i) as usize;
        if batch.get(at) != Some(&EVENTS_LOST) {
            continue;
        }
        // lost.count at 128; the lost reason is string ref 11 of those at 144.
        let count = u64_at(batch, at + 128);
        let (off, len) = (u32_at(batch, at + 144 + 11 * 8) as usize, u32_at(batch, at + 148 + 11 * 8) as usize);
        let reason = batch.get(at + off..at + off + len).map(String::from_utf8_lossy).unwrap_or_default();
        alerts.push(format!(
            r#"{{"priority":"warning","message":"lost {count} {reason}","tags":[],"fields":[],"event-index":{i}}}"#
        ));
    }
    alerts
}

impl Guest for Hostile {
    fn metadata() -> String {
        r#"{"id":"hostile","version":"1.0.0","description":"misbehaves on purpose","subscriptions":["process-exec","events-lost"],"containers-only":false,"tags":["test"]}"#.into()
    }

    fn init(config: String) -> Result<(), String> {
        let mode = match config.split("\"mode\"").nth(1).and_then(|r| r.split('"').nth(1)) {
            Some("giant") => Mode::Giant,
            Some("flood") => Mode::Flood,
            Some("bad-index") => Mode::BadIndex,
            Some("log-injection") => Mode::LogInjection,
            Some("slow") => Mode::Slow,
            Some("slow-init") => Mode::SlowInit,
            _ => Mode::Quiet,
        };
        MODE.set(mode);
        BUSY_US.set(number(&config, "busy_us").unwrap_or(6_000));
        TRAP_EVERY.set(number(&config, "trap_every").unwrap_or(50));
        if mode == Mode::SlowInit {
            burn(number(&config, "init_ms").unwrap_or(400) * 1_000);
        }
        Ok(())
    }

    fn on_batch(batch: Vec<u8>) -> String {
        let lost = lost_alerts(&batch);
        if !lost.is_empty() {
            return format!("[{}]", lost.join(","));
        }
        let n = events(&batch);
        BATCHES.set(BATCHES.get() + 1);
        match MODE.get() {
            Mode::Quiet => String::new(),
            Mode::Giant => {
                // 24 MiB of `"",` tags: one small buffer on the rule's side,
                // what the host would have to allocate per tag on its own.
                let tags = "\"\",".repeat(8 << 20);
                format!(
                    r#"[{{"priority":"warning","message":"giant","tags":[{}""],"fields":[],"event-index":0}}]"#,
                    tags
                )
            }
            Mode::Flood => {
                // 100 short alerts per event: within the bytes a batch may
                // return, far beyond the alerts it may raise.
                let one = r#"{"priority":"warning","message":"flood","tags":[],"fields":[],"event-index":0}"#;
                format!("[{}]", vec![one; 100 * n.max(1) as usize].join(","))
            }
            Mode::BadIndex => {
                let one = format!(
                    r#"{{"priority":"warning","message":"bad index","tags":[],"fields":[],"event-index":{}}}"#,
                    n + 4_000_000
                );
                format!("[{}]", vec![one; 4].join(","))
            }
            Mode::LogInjection => {
                log(LogLevel::Error, "innocent\n2026-12-07T00:00:00.000000Z ERROR vigil: rule quarantined\x1b[2J");
                r#"[{"priority":"warning","message":"line\nFORGED ERROR \u001b[31mred","tags":["a\nb"],"fields":[{"key":"k\n","value":"v\r\n"}],"event-index":0}]"#.into()
            }
            Mode::Slow => {
                burn(BUSY_US.get());
                String::new()
            }
            Mode::SlowInit => {
                if BATCHES.get().is_multiple_of(TRAP_EVERY.get().max(1)) {
                    unreachable!("trap so that the host rebuilds this rule");
                }
                String::new()
            }
        }
    }

    fn snapshot() -> Option<Vec<u8>> {
        None
    }

    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Hostile);
