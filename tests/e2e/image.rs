//! Vigil's image (scripts/image.sh) run by Podman with exactly the pod
//! settings of the DaemonSet in engine/deploy/kubernetes/vigil.yaml, read
//! from the manifest and translated to Podman's flags: host PID, drop ALL
//! and add the listed capabilities, read-only root file system, no
//! privilege escalation, the same user, memory limit, grace period and
//! mounts (hostPaths mapped to the test's private runtimes and spool,
//! ConfigMaps and emptyDirs to the test's directories), in a network
//! namespace of the test's own, as a pod has.
//!
//! Asserts: the eBPF source loads (not the fallback); `/readyz` turns
//! ready; a host exec and an exec in a CRI pod's container (containerd) are
//! alerted, the latter with its container and pod, by a rule file from the
//! overlay the ConfigMap `vigil-rules` mounts over the image's bundled
//! rules; SIGTERM drains. Then a rolling update: the alerts the old
//! container spooled while the webhook was down are delivered by a new one
//! started from a new image tag on the same hostPath.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use serde_norway::Value as Yaml;

use crate::kubelet::Kubelet;
use crate::require_root;
use crate::support::*;
use crate::webhook::receiver::{Receiver, SECRET};

/// The overlay's rule file: alerts on the test's marker execs.
const MARKER_RULE: &str = r#"- rule: Image test marker
  desc: an exec the image test made
  condition: evt.type = execve and proc.cmdline contains vigil-image-marker
  output: "marker exec %proc.cmdline"
  priority: WARNING
"#;

/// A network namespace of the test's own (only `lo`, up), deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("vigil-image-{}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        let ns = NetNs(name);
        assert!(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status().unwrap().success());
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }

    /// GETs `url` from inside the namespace, as the kubelet's probe does:
    /// the body when the answer is 2xx. (On a thread of its own that enters
    /// the namespace: its sockets are made there.)
    fn get(&self, url: &str) -> Option<String> {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid namespace fd; only this short-lived thread moves.
                assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _ = rustls::crypto::ring::default_provider().install_default();
                rt.block_on(async {
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
                    let answer = client.get(url).send().await.ok()?;
                    if !answer.status().is_success() {
                        return None;
                    }
                    answer.text().await.ok()
                })
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The DaemonSet's pod, as Podman flags (the image and name aside).
struct PodFlags {
    flags: Vec<String>,
    args: Vec<String>,
    /// The manifest's image tag.
    tag: String,
}

/// Translates the DaemonSet's pod spec. `host_paths` maps each hostPath the
/// manifest mounts to the test's stand-in; `config_maps` each ConfigMap to
/// a directory holding its files; emptyDirs become directories in `scratch`.
fn pod_flags(
    ds: &Yaml,
    host_paths: &[(&str, &Path)],
    config_maps: &[(&str, &Path)],
    scratch: &Path,
    netns: &Path,
) -> PodFlags {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let strings = |v: &Yaml| -> Vec<String> {
        v.as_sequence().map_or(Vec::new(), |s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
    };
    let mut f: Vec<String> = Vec::new();
    assert_eq!(pod["hostPID"], true);
    f.push("--pid=host".into());
    assert!(pod["hostNetwork"].is_null(), "the pod has a network of its own");
    f.push(format!("--network=ns:{}", netns.display()));
    assert_eq!(sc["privileged"], false);
    for cap in strings(&sc["capabilities"]["drop"]) {
        f.push(format!("--cap-drop={cap}"));
    }
    for cap in strings(&sc["capabilities"]["add"]) {
        f.push(format!("--cap-add={cap}"));
    }
    if sc["readOnlyRootFilesystem"] == true {
        // Kubernetes mounts no tmpfs of its own on a read-only root.
        f.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if sc["allowPrivilegeEscalation"] == false {
        f.push("--security-opt=no-new-privileges".into());
    }
    match sc["seccompProfile"]["type"].as_str() {
        Some("Unconfined") => f.push("--security-opt=seccomp=unconfined".into()),
        Some("RuntimeDefault") => {}
        other => panic!("a seccomp profile the test cannot translate: {other:?}"),
    }
    f.push(format!("--user={}", sc["runAsUser"].as_u64().expect("runAsUser")));
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        let mib = mem.strip_suffix("Mi").expect("memory limit in Mi");
        f.push(format!("--memory={mib}m"));
    }
    if let Some(grace) = pod["terminationGracePeriodSeconds"].as_u64() {
        f.push(format!("--stop-timeout={grace}"));
    }
    let volumes = pod["volumes"].as_sequence().unwrap();
    for m in c["volumeMounts"].as_sequence().unwrap() {
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        let source: PathBuf = if let Some(host) = v["hostPath"]["path"].as_str() {
            let found = host_paths.iter().find(|(p, _)| *p == host);
            found.unwrap_or_else(|| panic!("the test has no stand-in for hostPath {host}")).1.to_path_buf()
        } else if let Some(name) = v["configMap"]["name"].as_str() {
            let found = config_maps.iter().find(|(n, _)| *n == name);
            found.unwrap_or_else(|| panic!("the test has no ConfigMap {name}")).1.to_path_buf()
        } else if v["emptyDir"].is_mapping() {
            let dir = scratch.join(v["name"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            dir
        } else {
            panic!("a volume the test cannot translate: {v:?}");
        };
        let source = match m["subPath"].as_str() {
            Some(sub) => source.join(sub),
            None => source,
        };
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        f.push(format!("--volume={}:{}{ro}", source.display(), m["mountPath"].as_str().unwrap()));
    }
    let image = c["image"].as_str().unwrap();
    PodFlags { flags: f, args: strings(&c["args"]), tag: image.rsplit_once(':').unwrap().1.to_string() }
}

/// A Vigil container on the test's Podman, removed when dropped.
struct VigilContainer<'a> {
    podman: &'a RuntimeDaemon,
    name: String,
}

impl<'a> VigilContainer<'a> {
    fn start(podman: &'a RuntimeDaemon, name: &str, image: &str, pod: &PodFlags) -> VigilContainer<'a> {
        let mut args: Vec<&str> = vec!["run", "-d", "--name", name];
        args.extend(pod.flags.iter().map(String::as_str));
        args.push(image);
        args.extend(pod.args.iter().map(String::as_str));
        podman.cli(&args);
        VigilContainer { podman, name: name.to_string() }
    }

    /// Its stdout (alerts) and stderr (log) so far.
    fn output(&self) -> (String, String) {
        let out = Command::new("podman")
            .args(["--remote", "--url", &format!("unix://{}", self.podman.socket().display()), "logs", &self.name])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn alerts(&self) -> Vec<Value> {
        self.output().0.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn running(&self) -> bool {
        self.podman.cli(&["inspect", "--format", "{{.State.Running}}", &self.name]) == "true"
    }

    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(self.running(), "{what}: the container exited; log:\n{}", self.output().1);
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; log:\n{}", self.output().1);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM (as the kubelet stops a pod), waits; the exit code.
    fn stop(&self) -> i64 {
        self.podman.cli(&["stop", &self.name]);
        self.podman.cli(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]).parse().unwrap()
    }
}

impl Drop for VigilContainer<'_> {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["--remote", "--url", &format!("unix://{}", self.podman.socket().display())])
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn marked<'v>(alerts: &'v [Value], marker: &str) -> Option<&'v Value> {
    alerts.iter().find(|a| {
        a["rule"] == "Image test marker"
            && a["output"].as_str().is_some_and(|o| o.split_whitespace().any(|w| w == marker))
    })
}

#[test]
fn the_image_runs_with_the_daemonsets_privileges_and_upgrades_without_loss() {
    require_root!();
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        skipped(module_path!(), "the kernel has no BTF: the eBPF source cannot load here");
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let archive = target_dir().join(format!("image/vigil-{version}.tar"));
    assert!(archive.exists(), "{} is not built: run scripts/image.sh (scripts/test.sh does)", archive.display());
    let manifest = std::fs::read_to_string(workspace().join("engine/deploy/kubernetes/vigil.yaml")).unwrap();
    let docs: Vec<Yaml> =
        serde_norway::Deserializer::from_str(&manifest).map(|d| Yaml::deserialize(d).unwrap()).collect();
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();

    let podman = RuntimeDaemon::podman();
    let containerd = RuntimeDaemon::containerd();
    podman.cli(&["load", "-i", archive.to_str().unwrap()]);
    let netns = NetNs::new();
    let rx = Receiver::start_in_netns(&netns.path());
    rx.otherwise(Some(503)); // down until the upgrade

    // ConfigMaps: the manifest's config, with a webhook to the receiver; the rules overlay.
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, overlay, spool, crio) =
        (dir.path().join("config"), dir.path().join("rules"), dir.path().join("spool"), dir.path().join("crio"));
    for d in [&config_dir, &overlay, &spool, &crio] {
        std::fs::create_dir_all(d).unwrap();
    }
    let config = format!(
        "{}\n[[output.webhook]]\nname = \"siem\"\nurl = \"{}\"\nhmac_secret = \"{SECRET}\"\n\
         retry_initial = \"100ms\"\nretry_max = \"500ms\"\ndrain_timeout = \"2s\"\n",
        config_map["data"]["vigil.toml"].as_str().unwrap(),
        rx.url()
    );
    std::fs::write(config_dir.join("vigil.toml"), config).unwrap();
    std::fs::write(overlay.join("image-test.yaml"), MARKER_RULE).unwrap();
    let socket_dir = |rt: &RuntimeDaemon| rt.socket().parent().unwrap().to_path_buf();
    let (containerd_dir, podman_dir) = (socket_dir(&containerd), socket_dir(&podman));
    let host_paths: [(&str, &Path); 6] = [
        ("/var/lib/vigil", &spool),
        ("/sys/fs/cgroup", Path::new("/sys/fs/cgroup")),
        ("/sys/kernel/tracing", Path::new("/sys/kernel/tracing")),
        ("/run/containerd", &containerd_dir),
        ("/run/crio", &crio),
        ("/run/podman", &podman_dir),
    ];
    let config_maps: [(&str, &Path); 2] = [("vigil-config", &config_dir), ("vigil-rules", &overlay)];
    let pod = pod_flags(ds, &host_paths, &config_maps, dir.path(), &netns.path());
    assert_eq!(pod.tag, version, "the manifest names the image of this version");
    let port = ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64().unwrap();
    let readyz = format!("http://127.0.0.1:{port}/readyz");

    let old = VigilContainer::start(&podman, "vigil-image-old", &format!("localhost/vigil:{version}"), &pod);
    old.wait_for("/readyz ready", Duration::from_secs(120), |_| netns.get(&readyz).is_some());
    let log = old.output().1;
    assert!(log.contains("source=\"ebpf\""), "the eBPF source, not the fallback:\n{log}");
    assert!(!log.contains("namespace changes are not traced"), "setns tracepoints attach (tracefs):\n{log}");
    assert!(log.contains("image-test.yaml"), "the overlay's rule file loaded:\n{log}");

    // Host execs (20, so the update has something to carry), and an exec in a pod's container.
    let host_marker = format!("vigil-image-marker-host-{}", std::process::id());
    for i in 0..20 {
        let exec = format!("exec /bin/true {host_marker}-{i}");
        assert!(Command::new("/bin/sh").args(["-c", &exec]).status().unwrap().success());
    }
    let mut kubelet = Kubelet::connect(&containerd.socket());
    let pod_spec = kubelet.run_pod("web-7d9f", "shop", &[("app", "web")]);
    let app = kubelet.run_container(&pod_spec, "app", &["/bin/sh", "-c", "sleep 60"]);
    let pod_marker = format!("vigil-image-marker-pod-{}", std::process::id());
    kubelet.exec(&app, &["/bin/true", &pod_marker]);
    old.wait_for("both marker alerts", Duration::from_secs(30), |c| {
        let a = c.alerts();
        (0..20).all(|i| marked(&a, &format!("{host_marker}-{i}")).is_some()) && marked(&a, &pod_marker).is_some()
    });
    let alerts = old.alerts();
    let on_host = &marked(&alerts, &format!("{host_marker}-0")).unwrap()["output_fields"];
    assert_eq!(on_host["container.id"], "host", "{on_host}");
    let in_pod = &marked(&alerts, &pod_marker).unwrap()["output_fields"];
    assert!(app.starts_with(in_pod["container.id"].as_str().unwrap()), "{in_pod}");
    assert_eq!((&in_pod["k8s.pod.name"], &in_pod["k8s.ns.name"]), (&"web-7d9f".into(), &"shop".into()), "{in_pod}");
    drop(kubelet);

    // SIGTERM drains: the webhook is down, so the alerts stay in the spool on the hostPath.
    assert_eq!(old.stop(), 0, "a clean exit on SIGTERM:\n{}", old.output().1);
    let log = old.output().1;
    assert!(log.contains("alerts in its spool"), "{log}");
    assert!(rx.ids().is_empty());
    let spooled: Vec<String> = old.alerts().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();

    // The rolling update: a new image tag, the same hostPath; the webhook is back.
    podman.cli(&["tag", &format!("localhost/vigil:{version}"), "localhost/vigil:next"]);
    rx.otherwise(None);
    let new = VigilContainer::start(&podman, "vigil-image-new", "localhost/vigil:next", &pod);
    new.wait_for("the old container's alerts delivered", Duration::from_secs(60), |_| {
        spooled.iter().all(|id| rx.ids().contains(id))
    });
    assert!(new.output().1.contains("spool holds alerts from an earlier run"), "{}", new.output().1);
    assert_eq!(new.stop(), 0, "{}", new.output().1);
    assert!(rx.bad_signatures() == 0);
    eprintln!("image test: {} alerts spooled by the old container, all delivered by the new one", spooled.len());
}
