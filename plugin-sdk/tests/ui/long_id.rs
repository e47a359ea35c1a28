use vigil_sdk::prelude::*;

/// The host refuses ids over 64 bytes; so does the macro.
#[rule(id = "a-rule-whose-id-goes-on-and-on-far-past-what-the-host-accepts-as-an-id", subscribe = [ProcessExec])]
fn detect(event: &Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
