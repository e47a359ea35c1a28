//! The kubelet's part in the tests: pods and containers through CRI, on a
//! private containerd (scripts/runtimes.sh).

/// The kubelet's part, played by the test: pods and containers through CRI
/// with the labels a kubelet sets. Its pods are stopped and removed when
/// dropped.
pub struct Kubelet {
    rt: tokio::runtime::Runtime,
    client: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pub pods: Vec<String>,
    dir: tempfile::TempDir,
}

/// A pod as the kubelet asked for it.
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox_id: String,
    pub config: k8s_cri::v1::PodSandboxConfig,
}

impl Kubelet {
    pub fn connect(socket: &std::path::Path) -> Kubelet {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let channel = rt.block_on(containerd_client::connect(socket)).unwrap();
        let client = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel);
        Kubelet { rt, client, pods: Vec::new(), dir: tempfile::tempdir().unwrap() }
    }

    /// A pod on the host network, in a besteffort pod cgroup as a kubelet
    /// with the cgroupfs driver makes.
    pub fn run_pod(&mut self, name: &str, namespace: &str, labels: &[(&str, &str)]) -> PodSpec {
        use k8s_cri::v1::*;
        let uid = format!("0f6c5d62-8d4c-4a51-9d7c-{:012x}", vigil_engine::time::now_ns() % (1 << 48));
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: self.dir.path().display().to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let sandbox_id = self.rt.block_on(self.client.run_pod_sandbox(request)).unwrap().into_inner().pod_sandbox_id;
        self.pods.push(sandbox_id.clone());
        PodSpec { name: name.into(), namespace: namespace.into(), uid, sandbox_id, config }
    }

    /// Creates and starts a container running `command` in `pod`.
    pub fn run_container(&mut self, pod: &PodSpec, name: &str, command: &[&str]) -> String {
        use k8s_cri::v1::*;
        let labels = [
            ("io.kubernetes.pod.name", pod.name.as_str()),
            ("io.kubernetes.pod.namespace", pod.namespace.as_str()),
            ("io.kubernetes.pod.uid", pod.uid.as_str()),
            ("io.kubernetes.container.name", name),
        ];
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: "localhost/vigil-busybox:test".into(), ..Default::default() }),
            command: command.iter().map(|c| c.to_string()).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self.rt.block_on(self.client.create_container(request)).unwrap().into_inner().container_id;
        self.rt.block_on(self.client.start_container(StartContainerRequest { container_id: id.clone() })).unwrap();
        id
    }

    pub fn exec(&mut self, id: &str, cmd: &[&str]) {
        let code = self.exec_status(id, cmd);
        assert_eq!(code, 0, "{cmd:?} exited {code}");
    }

    /// Runs `cmd` in container `id` as `crictl exec` does; its exit code.
    pub fn exec_status(&mut self, id: &str, cmd: &[&str]) -> i32 {
        let request = k8s_cri::v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout: 10,
        };
        self.rt.block_on(self.client.exec_sync(request)).unwrap().into_inner().exit_code
    }

    pub fn stop_and_remove(&mut self, id: &str) {
        use k8s_cri::v1::*;
        self.rt
            .block_on(self.client.stop_container(StopContainerRequest { container_id: id.into(), timeout: 0 }))
            .unwrap();
        self.rt.block_on(self.client.remove_container(RemoveContainerRequest { container_id: id.into() })).unwrap();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        use k8s_cri::v1::*;
        for id in std::mem::take(&mut self.pods) {
            let _ =
                self.rt.block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }));
            let _ = self.rt.block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }));
        }
    }
}
