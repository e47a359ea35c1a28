//! Test rule `echo`: one alert per event, numbered by a counter kept in its
//! state, so tests can check that every event is seen exactly once and that
//! state survives a hot reload.

use vigil_sdk::prelude::*;

/// Counts events.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    seen: u64,
}

impl State for Counter {}

/// Alerts on every process event, with a running count.
#[rule(id = "echo", subscribe = [ProcessExec, ProcessFork, ProcessExit, EventsLost], tags = ["test"])]
pub fn detect(state: &mut Counter, event: &Event) -> Alert {
    state.seen += 1;
    Alert::notice(format!("event {}", event.id())).field("seen", state.seen).field("event_id", event.id())
}
