//! What CRI's verbose status answers say of a container and of a pod's
//! sandbox (containerd and CRI-O alike): the container's description, its
//! sandbox, the pod's IPs, network mode and port mappings.

use k8s_cri::v1::{ContainerStatusResponse, PodSandboxStatusResponse, VersionResponse};
use vigil_event::{Container, Pod, Port, Runtime};

/// The runtime a CRI `Version` answer names.
pub(super) fn runtime_of(version: &VersionResponse) -> Runtime {
    if version.runtime_name.to_lowercase().contains("cri-o") { Runtime::CriO } else { Runtime::Containerd }
}

/// What a verbose `ContainerStatus` says: the container, and its sandbox's
/// id. containerd and CRI-O both put `{"sandboxID", "pid", "privileged",
/// ...}` as JSON under the `info` key; without it, pid and privileged are
/// unknown (0, false).
pub(super) fn container_of_status(response: ContainerStatusResponse, runtime: Runtime) -> Option<(Container, String)> {
    let status = response.status?;
    let info: serde_json::Value =
        response.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
    let mut labels: Vec<(String, String)> = status.labels.into_iter().collect();
    labels.sort();
    let container = Container {
        id: status.id,
        name: status.metadata.map(|m| m.name).unwrap_or_default(),
        image: status.image.map(|i| i.image).unwrap_or_default(),
        image_digest: status.image_ref,
        runtime,
        labels,
        pid: info["pid"].as_u64().unwrap_or(0) as u32,
        privileged: info["privileged"].as_bool().unwrap_or(false),
        started_at_ns: status.started_at.max(0) as u64,
        // Its sandbox's, set by the caller.
        network_mode: "pod".into(),
        // The OCI spec the runtime made: the uid its process runs as.
        runs_as_root: info["runtimeSpec"]["process"]["user"]["uid"].as_u64().map(|uid| uid == 0),
        ..Default::default()
    };
    Some((container, info["sandboxID"].as_str().unwrap_or_default().to_string()))
}

/// What a verbose `PodSandboxStatus` says: the sandbox as a container, and
/// its pod (metadata and the pod's labels).
pub(super) fn sandbox_of_status(response: PodSandboxStatusResponse, runtime: Runtime) -> Option<(Container, Pod)> {
    let status = response.status?;
    let info: serde_json::Value =
        response.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
    let meta = status.metadata.unwrap_or_default();
    let mut labels: Vec<(String, String)> = status.labels.into_iter().collect();
    labels.sort();
    let ips = status
        .network
        .map(|n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|a| a.ip))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let host_network = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .is_some_and(|o| o.network == k8s_cri::v1::NamespaceMode::Node as i32);
    let pod = Pod { name: meta.name.clone(), namespace: meta.namespace, uid: meta.uid, sandbox: true, labels, ips };
    let container = Container {
        id: status.id,
        name: meta.name,
        image: info["image"].as_str().unwrap_or_default().to_string(),
        runtime,
        pid: info["pid"].as_u64().unwrap_or(0) as u32,
        started_at_ns: status.created_at.max(0) as u64,
        network_mode: if host_network { "host" } else { "pod" }.into(),
        ports: sandbox_ports(&info["config"]["port_mappings"]),
        ..Default::default()
    };
    Some((container, pod))
}

/// The pod's port mappings, from the sandbox config in a verbose status
/// (containerd and CRI-O: `{"protocol", "container_port", "host_port",
/// "host_ip"}`, the protocol as CRI's enum number or its name).
fn sandbox_ports(mappings: &serde_json::Value) -> Vec<Port> {
    let Some(list) = mappings.as_array() else { return Vec::new() };
    let port = |v: &serde_json::Value| v.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    list.iter()
        .filter(|m| m["host_port"].as_u64().unwrap_or(0) != 0)
        .map(|m| Port {
            container_port: port(&m["container_port"]),
            protocol: match &m["protocol"] {
                serde_json::Value::Number(n) => {
                    ["tcp", "udp", "sctp"].get(n.as_u64().unwrap_or(0) as usize).unwrap_or(&"tcp").to_string()
                }
                serde_json::Value::String(s) => s.to_lowercase(),
                _ => "tcp".into(),
            },
            host_ip: m["host_ip"].as_str().unwrap_or_default().to_string(),
            host_port: port(&m["host_port"]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerMetadata, ContainerStatus, ImageSpec, PodSandboxMetadata, PodSandboxStatus};

    use std::collections::HashMap;

    use super::*;
    use crate::enrich::containers::pod_from_labels;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn status(info: Option<&str>) -> ContainerStatusResponse {
        ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: "c".repeat(64),
                metadata: Some(ContainerMetadata { name: "app".into(), attempt: 0 }),
                state: 1,
                started_at: 1_763_000_000_000_000_000,
                image: Some(ImageSpec { image: "quay.io/shop/web:1.4".into(), ..Default::default() }),
                image_ref: "quay.io/shop/web@sha256:5d41402abc4b2a76b9719d911017c592".into(),
                labels: labels(&[("io.kubernetes.pod.name", "web-1"), ("io.kubernetes.pod.namespace", "shop")]),
                ..Default::default()
            }),
            info: info.map(|i| [("info".to_string(), i.to_string())].into_iter().collect()).unwrap_or_default(),
        }
    }

    #[test]
    fn runtimes_are_told_apart_by_their_version() {
        let v = |name: &str| VersionResponse { runtime_name: name.into(), ..Default::default() };
        assert_eq!(runtime_of(&v("containerd")), Runtime::Containerd);
        assert_eq!(runtime_of(&v("cri-o")), Runtime::CriO);
    }

    #[test]
    fn containerd_and_cri_o_container_statuses_read_alike() {
        // containerd 1.6's verbose info, and CRI-O's (same keys, other extras).
        let containerd =
            r#"{"sandboxID":"s1","pid":4242,"removing":false,"snapshotKey":"k","privileged":true,"runtimeSpec":{}}"#;
        let crio = r#"{"sandboxID":"s1","pid":4242,"runtimeSpec":{"ociVersion":"1.0.2"},"privileged":true}"#;
        for (runtime, info) in [(Runtime::Containerd, containerd), (Runtime::CriO, crio)] {
            let (c, sandbox) = container_of_status(status(Some(info)), runtime).unwrap();
            assert_eq!(sandbox, "s1");
            assert_eq!((c.name.as_str(), c.image.as_str(), c.runtime), ("app", "quay.io/shop/web:1.4", runtime));
            assert_eq!(c.image_digest, "quay.io/shop/web@sha256:5d41402abc4b2a76b9719d911017c592");
            assert_eq!((c.pid, c.privileged, c.started_at_ns), (4242, true, 1_763_000_000_000_000_000));
            assert_eq!(c.labels[0].0, "io.kubernetes.pod.name");
            assert_eq!(c.runs_as_root, None, "no process in the spec");
        }
        let spec = r#"{"sandboxID":"s1","runtimeSpec":{"process":{"user":{"uid":0,"gid":0}}}}"#;
        assert_eq!(container_of_status(status(Some(spec)), Runtime::Containerd).unwrap().0.runs_as_root, Some(true));
    }

    #[test]
    fn a_status_without_verbose_info_still_describes_the_container() {
        let (c, sandbox) = container_of_status(status(None), Runtime::CriO).unwrap();
        assert_eq!((c.name.as_str(), c.pid, c.privileged, sandbox.as_str()), ("app", 0, false, ""));
        // The pod then comes from the kubelet's labels.
        assert_eq!(pod_from_labels(&c.labels).unwrap().name, "web-1");
        assert!(container_of_status(ContainerStatusResponse::default(), Runtime::CriO).is_none());
    }

    #[test]
    fn a_sandbox_status_is_its_pod() {
        let response = PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "s".repeat(64),
                metadata: Some(PodSandboxMetadata {
                    name: "web-1".into(),
                    uid: "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11".into(),
                    namespace: "shop".into(),
                    attempt: 0,
                }),
                created_at: 5,
                labels: labels(&[("app", "web")]),
                network: Some(k8s_cri::v1::PodSandboxNetworkStatus {
                    ip: "10.244.1.7".into(),
                    additional_ips: vec![k8s_cri::v1::PodIp { ip: "fd00:10:244:1::7".into() }],
                }),
                ..Default::default()
            }),
            info: [(
                "info".to_string(),
                r#"{"pid":77,"image":"registry.k8s.io/pause:3.9","config":{"port_mappings":[
                    {"protocol":1,"container_port":53,"host_port":5353,"host_ip":"127.0.0.1"},
                    {"container_port":80}]}}"#
                    .to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let (c, pod) = sandbox_of_status(response, Runtime::CriO).unwrap();
        assert_eq!(pod.ips, ["10.244.1.7", "fd00:10:244:1::7"]);
        assert_eq!(c.network_mode, "pod");
        assert_eq!(
            c.ports,
            [Port { container_port: 53, protocol: "udp".into(), host_ip: "127.0.0.1".into(), host_port: 5353 }],
            "published mappings only"
        );
        assert_eq!((c.name.as_str(), c.image.as_str(), c.pid), ("web-1", "registry.k8s.io/pause:3.9", 77));
        assert_eq!((pod.name.as_str(), pod.namespace.as_str()), ("web-1", "shop"));
        assert_eq!(pod.uid, "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11");
        assert!(pod.sandbox);
        assert_eq!(pod.labels, vec![("app".to_string(), "web".to_string())]);
    }
}
