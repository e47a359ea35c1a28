//! The deployment files under engine/deploy: parsed and checked for what
//! running Vigil needs (no kubectl or systemd here to validate them).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_norway::Value;

use crate::support::*;

fn deploy(path: &str) -> String {
    std::fs::read_to_string(workspace().join("engine/deploy").join(path)).unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// A config as Vigil would load it.
fn vigil_config(text: &str) -> vigil_engine::config::Config {
    let c: vigil_engine::config::Config = toml::from_str(text).unwrap_or_else(|e| panic!("config: {e}"));
    c.validate().unwrap();
    c
}

#[test]
fn daemonset_has_what_vigil_needs_and_no_more() {
    let docs = documents(&deploy("kubernetes/vigil.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet", "NetworkPolicy"]);
    let (config_map, ds, policy) = (&docs[1], &docs[2], &docs[3]);
    // The metrics port takes connections only from the monitoring namespace.
    assert_eq!(policy["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], ds["spec"]["selector"]["matchLabels"]);
    assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Ingress"]);
    let ingress = policy["spec"]["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 1, "one way in");
    assert_eq!(ingress[0]["ports"][0]["port"], 9376);
    assert!(ingress[0]["from"][0]["namespaceSelector"]["matchLabels"].as_mapping().is_some_and(|m| !m.is_empty()));
    assert!(ds["spec"]["template"]["spec"]["hostNetwork"].is_null(), "not on the node's network: the policy applies");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], config_map["metadata"]["namespace"]);

    let selector = ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    let labels = ds["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "the selector matches the pod's labels");
    }
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "host processes in /proc");
    let c = &pod["containers"][0];
    assert!(c["image"].as_str().is_some_and(|i| !i.is_empty()));

    // Capabilities, not privileged.
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let caps: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    for needed in ["BPF", "PERFMON"] {
        assert!(caps.contains(needed), "{needed} is needed to load tracing programs");
    }
    assert!(!caps.contains("SYS_ADMIN"), "CAP_BPF + CAP_PERFMON suffice on kernels >= 5.8");

    // Every mount has its volume; the config and the rules come from ConfigMaps.
    let volumes: Vec<&Value> = pod["volumes"].as_sequence().unwrap().iter().collect();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).copied();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for m in mounts {
        assert!(volume(m["name"].as_str().unwrap()).is_some(), "volume for {:?}", m["name"]);
    }
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    let toml_text = config_map["data"]["vigil.toml"].as_str().unwrap();
    let cfg = vigil_config(toml_text);
    let config_mount = mount_of("/etc/vigil/vigil.toml");
    assert_eq!(
        volume(config_mount["name"].as_str().unwrap()).unwrap()["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let args = strings(&c["args"]);
    assert!(args.windows(2).any(|w| w[0] == "--config" && w[1] == "/etc/vigil/vigil.toml"), "{args:?}");

    // The bundled rules from the image (nothing mounted over them), a
    // ConfigMap layered over them, optional.
    let rules_dir = cfg.rules.dir.clone().expect("rules.dir set");
    assert_eq!(rules_dir, std::path::Path::new("/usr/share/vigil/rules"), "where scripts/image.sh puts them");
    assert!(mounts.iter().all(|m| !rules_dir.starts_with(m["mountPath"].as_str().unwrap())), "the image's own");
    assert_eq!(cfg.rules.overlay_dirs.len(), 1);
    let overlay = mount_of(cfg.rules.overlay_dirs[0].to_str().unwrap());
    let overlay = &volume(overlay["name"].as_str().unwrap()).unwrap()["configMap"];
    assert!(overlay.is_mapping() && overlay["optional"] == true, "an optional ConfigMap over them");

    // Spools survive pod restarts: on the node.
    let spool_dir = cfg.output.spool_dir();
    let spool_mount = mount_of(spool_dir.to_str().unwrap());
    assert!(volume(spool_mount["name"].as_str().unwrap()).unwrap()["hostPath"].is_mapping(), "spool on a hostPath");

    // Probes reach the metrics endpoint, which listens beyond loopback.
    assert!(cfg.metrics.enabled && !cfg.metrics.listen.ip().is_loopback());
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(cfg.metrics.listen.port() as u64));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], port["name"]);
    }
}

#[test]
fn host_config_and_systemd_unit() {
    let cfg = vigil_config(&deploy("vigil.toml"));
    assert!(cfg.metrics.enabled && cfg.metrics.listen.ip().is_loopback(), "loopback on a host");

    let unit = deploy("systemd/vigil.service");
    let mut section = String::new();
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.push((section.clone(), k.to_string(), v.to_string()));
    }
    let get = |s: &str, k: &str| keys.iter().find(|(a, b, _)| a == s && b == k).map(|(_, _, v)| v.as_str());
    let exec = get("Service", "ExecStart").unwrap();
    assert!(
        exec.starts_with('/') && exec.contains(" run ") && exec.contains("--config /etc/vigil/vigil.toml"),
        "{exec}"
    );
    assert!(get("Service", "ExecReload").unwrap().contains("-HUP"));
    assert_eq!(get("Service", "Restart"), Some("always"));
    assert_eq!(get("Service", "StateDirectory"), Some("vigil"), "/var/lib/vigil holds the spools");
    let caps = get("Service", "CapabilityBoundingSet").unwrap();
    assert!(caps.contains("CAP_BPF") && caps.contains("CAP_PERFMON") && !caps.contains("CAP_SYS_ADMIN"));
    // The unit and the DaemonSet grant the same capabilities (the measured
    // table in docs/deploying.md), but NET_ADMIN, for the process connector,
    // which answers in the host's network namespace only, never in a pod's;
    // the docs list each one.
    let unit_caps: BTreeSet<String> =
        caps.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_string()).collect();
    let docs = documents(&deploy("kubernetes/vigil.yaml"));
    let sc = &docs[2]["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    let ds_caps: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    let host_only: BTreeSet<String> = unit_caps.difference(&ds_caps).cloned().collect();
    assert_eq!(
        host_only,
        BTreeSet::from(["NET_ADMIN".to_string()]),
        "the systemd unit and the DaemonSet differ only there"
    );
    assert!(ds_caps.is_subset(&unit_caps));
    assert_eq!(get("Service", "LimitMEMLOCK"), Some("infinity"), "older kernels' eBPF maps, without SYS_RESOURCE");
    let deploying = std::fs::read_to_string(workspace().join("docs/deploying.md")).unwrap();
    for c in &unit_caps {
        assert!(deploying.contains(&format!("| `{c}`")), "docs/deploying.md says what {c} is for");
    }
    assert_eq!(get("Install", "WantedBy"), Some("multi-user.target"));
    assert!(cfg.output.spool_dir().starts_with("/var/lib/vigil"));
}
