use vigil_sdk::prelude::*;

/// Misspells an event kind.
#[rule(subscribe = [ProcesExec])]
fn detect(event: &Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
