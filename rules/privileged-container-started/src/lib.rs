//! Vigil rule `privileged-container-started`: a container started with
//! `--privileged` (or `securityContext.privileged: true`), which has every
//! capability and the host's devices, so one step from the host (MITRE
//! ATT&CK T1610, T1611). Only starts are reported, not creates, so each
//! container alerts once per start.

use vigil_sdk::prelude::*;

/// A privileged container was started.
#[rule(
    id = "privileged-container-started",
    subscribe = [ContainerStart],
    tags = ["container", "mitre_privilege_escalation", "T1610", "T1611"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    if !event.is(EventKind::ContainerStart) {
        return None;
    }
    let container = event.container().filter(|c| c.privileged())?;
    let pod = event.pod().map(|p| format!(" pod={}/{}", p.namespace(), p.name())).unwrap_or_default();
    Some(Alert::warning(format!(
        "Privileged container started (container={} id={} image={} runtime={}{pod})",
        container.name(),
        container.short_id(),
        container.image(),
        container.runtime().name(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{container_event, exec, run};

    fn privileged(c: &mut vigil_sdk::testing::Container) {
        c.privileged = true;
    }

    #[test]
    fn privileged_start_alerts() {
        let alerts = run(
            detect,
            [
                container_event(EventKind::ContainerStart, "debug", "alpine:3.19").with_container(|c| {
                    c.privileged = true;
                    c.id = format!("f00dcafe1234{}", "9".repeat(52));
                }),
                container_event(EventKind::ContainerStart, "cni", "calico/node:v3")
                    .with_container(privileged)
                    .pod("calico-node-x", "kube-system"),
            ],
        );
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].priority, Priority::Warning);
        assert_eq!(
            alerts[0].message,
            "Privileged container started (container=debug id=f00dcafe1234 image=alpine:3.19 runtime=docker)"
        );
        assert!(
            alerts[1].message.ends_with("image=calico/node:v3 runtime=docker pod=kube-system/calico-node-x)"),
            "{}",
            alerts[1].message
        );
    }

    #[test]
    fn unprivileged_starts_creates_and_execs_do_not_alert() {
        let alerts = run(
            detect,
            [
                container_event(EventKind::ContainerStart, "web", "nginx"),
                container_event(EventKind::ContainerCreate, "debug", "alpine").with_container(privileged),
                exec("/bin/sh", ["sh"]).container("debug", "alpine").with_container(privileged),
            ],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
