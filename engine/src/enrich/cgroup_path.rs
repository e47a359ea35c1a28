//! Which container a cgroup path belongs to, from the path alone.
//!
//! Every runtime puts a container's processes in a cgroup named after the
//! container; the name's form depends on the runtime and on the cgroup
//! driver (cgroupfs or systemd):
//!
//! | runtime | cgroupfs | systemd |
//! |---|---|---|
//! | Docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
//! | containerd (CRI) | `/kubepods/<qos>/pod<uid>/<id>` | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | CRI-O | `/kubepods/<qos>/pod<uid>/crio-<id>` | `.../crio-<id>.scope` |
//! | Podman | `/libpod_parent/libpod-<id>`, in a pod `/libpod_parent/<pod>/libpod-<id>` | `/machine.slice/libpod-<id>.scope` |
//! | GitHub Actions job containers | `/actions_job/<id>` | |
//! | Cloud Foundry garden | `/garden/<handle>` | |
//!
//! Nested containers (docker-in-docker, kind and minikube nodes, whose pods
//! live under the node container's cgroup) resolve to the innermost one,
//! marked `nested`: a runtime inside the outer container made it (or the
//! outer container's own processes did, if they can write their cgroup),
//! so the host's runtimes cannot vouch for it, and their description of a
//! container with the same id is not its own.
//! A path under a user's systemd manager (`user@<uid>.service`, a subtree
//! delegated to that user, where rootless runtimes run) is marked
//! `delegated`: its owner could have named any cgroup there like a
//! container, so only a runtime's watcher can vouch for it.
//! Runtime monitors (`conmon`, `crio-conmon-<id>.scope`) and everything else
//! belong to the host. The parser never panics on any input (fuzzed).

use vigil_event::Runtime;

/// The container a cgroup belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupOwner {
    pub runtime: Runtime,
    /// The runtime's container id (64 hex digits; a garden handle as is).
    pub id: String,
    /// The Kubernetes pod's uid, when the path names it.
    pub pod_uid: Option<String>,
    /// The path is in a subtree delegated to a user (`user@<uid>.service`):
    /// the name alone does not show a runtime made it.
    pub delegated: bool,
    /// The path is under another container's cgroup.
    pub nested: bool,
}

/// The container `path` (relative to its hierarchy's root, as in
/// `/proc/<pid>/cgroup`) belongs to; `None` for the host.
pub fn container_of(path: &str) -> Option<CgroupOwner> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Innermost first: the last component that names a container wins.
    for i in (0..parts.len()).rev() {
        let parent = if i > 0 { parts[i - 1] } else { "" };
        if let Some((runtime, id)) = container_component(parts[i], parent, &parts[..i]) {
            let pod_uid = parts[..i].iter().rev().find_map(|p| pod_uid(p));
            let delegated = parts[..i].iter().any(|p| p.starts_with("user@") && p.ends_with(".service"));
            let nested = (0..i).any(|j| {
                let parent = if j > 0 { parts[j - 1] } else { "" };
                container_component(parts[j], parent, &parts[..j]).is_some()
            });
            return Some(CgroupOwner { runtime, id, pod_uid, delegated, nested });
        }
    }
    None
}

/// A 64-hex-digit container id.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn container_component(name: &str, parent: &str, above: &[&str]) -> Option<(Runtime, String)> {
    // systemd driver: <prefix>-<id>.scope
    if let Some(scope) = name.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("docker-", Runtime::Docker),
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
            ("libpod-", Runtime::Podman),
        ] {
            if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_id(id)) {
                return Some((runtime, id.to_string()));
            }
        }
        return None;
    }
    // cgroupfs driver, prefixed names.
    if let Some(id) = name.strip_prefix("libpod-").filter(|id| is_id(id)) {
        return Some((Runtime::Podman, id.to_string()));
    }
    if let Some(id) = name.strip_prefix("crio-").filter(|id| is_id(id)) {
        return Some((Runtime::CriO, id.to_string()));
    }
    if parent == "garden" && !name.is_empty() {
        return Some((Runtime::Unknown, name.to_string()));
    }
    if !is_id(name) {
        return None;
    }
    // A bare id: the runtime from where it sits.
    let runtime = match parent {
        "docker" | "actions_job" => Runtime::Docker,
        // A Podman pod's own cgroup, not a container.
        "libpod_parent" => return None,
        p if pod_uid(p).is_some() => Runtime::Containerd,
        // `ctr`/nerdctl: /<namespace>/<id> (e.g. /default/<id>, /k8s.io/<id>).
        "default" | "k8s.io" | "moby" => Runtime::Containerd,
        _ if above.contains(&"docker") => Runtime::Docker,
        _ => Runtime::Unknown,
    };
    Some((runtime, name.to_string()))
}

/// The pod uid a component names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        slice[at + 4..].replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_string()
    };
    is_uid(&uid).then_some(uid)
}

/// A Kubernetes uid: a UUID (8-4-4-4-12 hex), or for static pods a 32-hex hash.
fn is_uid(s: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = s.split('-').collect();
    match groups.as_slice() {
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12] && groups.iter().all(|g| hex(g))
        }
        [one] => one.len() == 32 && hex(one),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1d7e8b4a6f5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b";
    const ID2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";
    const UID: &str = "6b1c7f0e-3a2d-4c5b-9e8f-1a2b3c4d5e6f";

    fn owner(runtime: Runtime, id: &str, pod: Option<&str>) -> Option<CgroupOwner> {
        Some(CgroupOwner { runtime, id: id.into(), pod_uid: pod.map(String::from), delegated: false, nested: false })
    }

    #[test]
    fn a_container_in_a_users_delegated_subtree_is_marked() {
        let id = "a".repeat(64);
        // Rootless Podman, or anyone with a systemd user manager naming a cgroup like a container.
        let rootless = format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope");
        let fake = format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{id}.scope");
        assert!(container_of(&rootless).unwrap().delegated);
        assert!(container_of(&fake).unwrap().delegated);
        assert!(!container_of(&format!("/system.slice/docker-{id}.scope")).unwrap().delegated);
        assert!(!container_of(&format!("/docker/{id}")).unwrap().delegated);
    }

    #[test]
    fn cgroupfs_forms() {
        assert_eq!(container_of(&format!("/docker/{ID}")), owner(Runtime::Docker, ID, None));
        assert_eq!(
            container_of(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            owner(Runtime::Containerd, ID, Some(UID))
        );
        // Guaranteed pods have no QoS level.
        assert_eq!(container_of(&format!("/kubepods/pod{UID}/{ID}")), owner(Runtime::Containerd, ID, Some(UID)));
        assert_eq!(
            container_of(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            owner(Runtime::CriO, ID, Some(UID))
        );
        assert_eq!(container_of(&format!("/libpod_parent/libpod-{ID}")), owner(Runtime::Podman, ID, None));
        assert_eq!(container_of(&format!("/libpod_parent/{ID2}/libpod-{ID}")), owner(Runtime::Podman, ID, None));
        assert_eq!(container_of(&format!("/actions_job/{ID}")), owner(Runtime::Docker, ID, None));
        assert_eq!(
            container_of("/garden/6a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"),
            owner(Runtime::Unknown, "6a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", None)
        );
        assert_eq!(container_of(&format!("/default/{ID}")), owner(Runtime::Containerd, ID, None));
    }

    #[test]
    fn systemd_forms() {
        assert_eq!(container_of(&format!("/system.slice/docker-{ID}.scope")), owner(Runtime::Docker, ID, None));
        let uid_ = UID.replace('-', "_");
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
            )),
            owner(Runtime::Containerd, ID, Some(UID))
        );
        assert_eq!(
            container_of(&format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope")),
            owner(Runtime::CriO, ID, Some(UID))
        );
        assert_eq!(container_of(&format!("/machine.slice/libpod-{ID}.scope")), owner(Runtime::Podman, ID, None));
        // Rootless Podman, under the user's systemd: in a subtree the user controls.
        assert_eq!(
            container_of(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            )),
            Some(CgroupOwner { delegated: true, ..owner(Runtime::Podman, ID, None).unwrap() })
        );
    }

    #[test]
    fn nested_containers_resolve_to_the_innermost_marked_nested() {
        let nested = |o: Option<CgroupOwner>| o.map(|o| CgroupOwner { nested: true, ..o });
        // docker-in-docker
        assert_eq!(container_of(&format!("/docker/{ID2}/docker/{ID}")), nested(owner(Runtime::Docker, ID, None)));
        // a container naming a cgroup of its own after another container
        assert_eq!(
            container_of(&format!("/system.slice/docker-{ID2}.scope/docker-{ID}.scope")),
            nested(owner(Runtime::Docker, ID, None))
        );
        // a pod in a kind node
        assert_eq!(
            container_of(&format!("/docker/{ID2}/kubepods/besteffort/pod{UID}/{ID}")),
            nested(owner(Runtime::Containerd, ID, Some(UID)))
        );
        // the kind node's own services belong to the node container
        assert_eq!(
            container_of(&format!("/docker/{ID2}/system.slice/containerd.service")),
            owner(Runtime::Docker, ID2, None)
        );
        // minikube with the systemd driver inside a docker node
        let uid_ = UID.replace('-', "_");
        assert_eq!(
            container_of(&format!(
                "/docker/{ID2}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{ID}.scope"
            )),
            nested(owner(Runtime::Docker, ID, Some(UID)))
        );
    }

    #[test]
    fn host_paths_and_monitors_are_the_host() {
        for path in [
            "/",
            "",
            "/init.scope",
            "/system.slice/sshd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/libpod_parent/conmon",
            "/kubepods/besteffort",
            &format!("/kubepods/besteffort/pod{UID}"),
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/libpod_parent/{ID}"),
            "/docker",
            "/docker/notanid",
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
        ] {
            assert_eq!(container_of(path), None, "{path}");
        }
    }

    #[test]
    fn pod_uids() {
        assert_eq!(pod_uid(&format!("pod{UID}")).as_deref(), Some(UID));
        assert_eq!(pod_uid("pod3c5e2b8f7a6d4e1f9b0c2d4e6f8a0b1c").as_deref(), Some("3c5e2b8f7a6d4e1f9b0c2d4e6f8a0b1c"));
        assert_eq!(pod_uid("podman"), None);
        assert_eq!(pod_uid("kubepods-besteffort.slice"), None);
        assert_eq!(pod_uid("system-pod.slice"), None);
    }

    proptest::proptest! {
        /// Any input: no panic, and an owner's id is never empty.
        #[test]
        fn never_panics_on_any_string(s in "\\PC*") {
            if let Some(o) = container_of(&s) {
                proptest::prop_assert!(!o.id.is_empty());
            }
        }

        /// Path-like inputs built from the pieces the forms use.
        #[test]
        fn never_panics_on_path_like_input(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("docker".to_string()),
                proptest::strategy::Just("kubepods".to_string()),
                proptest::strategy::Just("libpod_parent".to_string()),
                proptest::strategy::Just("garden".to_string()),
                proptest::strategy::Just(format!("pod{UID}")),
                proptest::strategy::Just(ID.to_string()),
                proptest::strategy::Just(format!("docker-{ID}.scope")),
                proptest::strategy::Just("kubepods-pod.slice".to_string()),
                proptest::strategy::Just("-pod.slice".to_string()),
                "[a-z0-9_.-]{0,70}",
            ],
            0..8,
        )) {
            let path = format!("/{}", parts.join("/"));
            let _ = container_of(&path);
        }
    }
}
