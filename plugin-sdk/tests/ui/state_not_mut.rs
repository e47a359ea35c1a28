use vigil_sdk::prelude::*;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter(u64);
impl State for Counter {}

/// State must be `&mut`.
#[rule(subscribe = [ProcessExec])]
fn detect(state: &Counter, event: &Event<'_>) -> Option<Alert> {
    let _ = (state, event);
    None
}

fn main() {}
