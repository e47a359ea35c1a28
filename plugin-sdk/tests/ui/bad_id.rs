use vigil_sdk::prelude::*;

/// Ids are kebab-case.
#[rule(id = "Shell_In_Container", subscribe = [ProcessExec])]
fn detect(event: &Event<'_>) -> Option<Alert> {
    let _ = event;
    None
}

fn main() {}
