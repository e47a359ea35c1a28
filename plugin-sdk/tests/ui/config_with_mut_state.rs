use vigil_sdk::prelude::*;

#[derive(Default, serde::Deserialize)]
struct Settings {
    threshold: u32,
}

/// `config = T` is for stateless rules.
#[rule(subscribe = [ProcessExec], config = Settings)]
fn detect(settings: &mut Settings, event: &Event<'_>) -> Option<Alert> {
    let _ = (settings.threshold, event);
    None
}

fn main() {}
