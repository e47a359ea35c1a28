use vigil_sdk::prelude::*;

/// Returns nothing.
#[rule(subscribe = [ProcessExec])]
fn detect(event: &Event<'_>) {
    let _ = event;
}

fn main() {}
