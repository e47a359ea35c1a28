//! `vigil containers`: the host's containers as Vigil sees them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use vigil_engine::watchers::{self, Listed, WatchError, Watcher};

/// Lists every container of every runtime found.
pub fn list(json: bool, config: Option<PathBuf>) -> Result<ExitCode> {
    let cfg = super::start(config.as_deref())?;
    let (docker_api, cri) = watchers::configured(&cfg.containers);
    if docker_api.is_empty() && cri.is_none() {
        eprintln!(
            "vigil: no container runtime socket found (set containers.docker_socket, podman_socket or cri_socket)"
        );
        return Ok(ExitCode::from(1));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut listed = Vec::new();
    let mut failed = 0;
    let mut report = |endpoint: &Path, got: Result<Vec<Listed>, WatchError>| match got {
        Ok(l) => listed.extend(l),
        Err(e) => {
            eprintln!("vigil: cannot list containers from {}: {}", endpoint.display(), vigil_engine::error_chain(&*e));
            failed += 1;
        }
    };
    let asked = docker_api.len() + usize::from(cri.is_some());
    for w in &docker_api {
        report(w.endpoint(), rt.block_on(w.list()));
    }
    if let Some(w) = &cri {
        report(w.endpoint(), rt.block_on(w.list()));
    }
    if failed == asked {
        return Ok(ExitCode::from(1));
    }
    if json {
        for (c, pod, state) in &listed {
            let v = serde_json::json!({
                "runtime": c.runtime.name(), "id": c.id, "name": c.name, "image": c.image,
                "pod": pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
                "state": state, "pid": c.pid, "privileged": c.privileged, "labels": c.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{v}");
        }
    } else {
        println!(
            "{:<10} {:<12} {:<24} {:<32} {:<24} {:<10} {:>7}",
            "RUNTIME", "ID", "NAME", "IMAGE", "POD", "STATE", "PID"
        );
        for (c, pod, state) in &listed {
            let pod = pod.as_ref().map_or("-".to_string(), |p| format!("{}/{}", p.namespace, p.name));
            println!(
                "{:<10} {:<12} {:<24} {:<32} {:<24} {:<10} {:>7}",
                c.runtime.name(),
                c.id.get(..12).unwrap_or(&c.id),
                c.name,
                c.image,
                pod,
                state,
                c.pid
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
