//! Test rule `flood`: returns far more than a rule should, as its config
//! says: `alerts` alerts per exec event, each with a `message_bytes`-long
//! message (a flood of alerts, or one giant return).

use vigil_sdk::prelude::*;

/// How much to return.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct Flood {
    /// Alerts per exec event.
    pub alerts: usize,
    /// Bytes of each alert's message.
    pub message_bytes: usize,
}

/// Floods the host on purpose.
#[rule(id = "flood", subscribe = [ProcessExec], tags = ["test"], config = Flood)]
pub fn detect(flood: &Flood, event: &Event) -> Vec<Alert> {
    let _ = event;
    let message = "x".repeat(flood.message_bytes.max(1));
    (0..flood.alerts).map(|_| Alert::notice(message.clone())).collect()
}
