use vigil_sdk::prelude::*;

/// Async is not allowed.
#[rule(subscribe = [ProcessExec])]
async fn detect(event: &Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
