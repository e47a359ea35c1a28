use vigil_sdk::prelude::*;

/// Returns something that is not alerts.
#[rule(subscribe = [ProcessExec])]
fn detect(event: &Event<'_>) -> bool {
    event.in_container()
}

fn main() {}
