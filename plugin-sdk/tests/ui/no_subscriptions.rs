use vigil_sdk::prelude::*;

/// Forgets to say what it wants.
#[rule(tags = ["x"])]
fn detect(event: &Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
