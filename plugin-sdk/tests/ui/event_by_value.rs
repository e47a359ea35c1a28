use vigil_sdk::prelude::*;

/// Takes the event by value.
#[rule(subscribe = [ProcessExec])]
fn detect(event: Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
