//! Test rule `lifecycle`: one alert per container lifecycle event, naming
//! the event, the container and its exit code, so tests can check that
//! runtime events reach rules through the daemon.

use vigil_sdk::prelude::*;

/// Alerts on every container create, start, stop and delete.
#[rule(
    id = "lifecycle",
    subscribe = [ContainerCreate, ContainerStart, ContainerStop, ContainerDelete],
    tags = ["test"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let c = event.container()?;
    let exit = event.exit_code().map_or(String::new(), |code| format!(" exit={code}"));
    Some(Alert::notice(format!("{} {} {}{exit}", event.kind().map_or("unknown", |k| k.name()), c.name(), c.short_id())))
}
