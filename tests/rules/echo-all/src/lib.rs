//! Conformance rule `echo-all` (Rust): for every event of every kind, one
//! alert whose fields `echo.00`, `echo.01`... (1,000 characters each: the
//! host caps a field at 4 KiB) are the event as it read it, every field
//! through the SDK's accessors, in the replay file's JSON shape; `seen` counts
//! events in its state (handed over on a hot reload). Its config accepts
//! only `{}`: an unknown key is refused by `init`. Its Python twin is
//! `tests/python-rules/echo_all.py`; `tests/e2e/conformance.rs` holds both
//! to the events the host was given.

use serde_json::{Map, Value, json};
use vigil_sdk::prelude::*;

/// Events seen so far.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    seen: u64,
}

impl State for Seen {
    fn init(config: &str) -> Result<Self, String> {
        let v: Map<String, Value> = vigil_sdk::parse_config(config)?;
        match v.keys().next() {
            Some(k) => Err(format!("invalid rule config: unknown key `{k}`")),
            None => Ok(Seen::default()),
        }
    }
}

/// Echoes every event.
#[rule(
    id = "echo-all",
    subscribe = [ProcessExec, ProcessFork, ProcessExit, CgroupMkdir, CgroupRmdir, ContainerCreate, ContainerStart,
                 ContainerStop, ContainerDelete, EventsLost, ContainerCopyIn, ContainerCopyOut],
    tags = ["test"]
)]
pub fn detect(state: &mut Seen, event: &Event) -> Alert {
    state.seen += 1;
    let text: Vec<char> = echo(event).to_string().chars().collect();
    let mut alert = Alert::notice(format!("echo {}", event.id())).field("seen", state.seen);
    for (i, chunk) in text.chunks(1000).enumerate() {
        alert = alert.field(format!("echo.{i:02}"), chunk.iter().collect::<String>());
    }
    alert
}

fn strings<'a>(s: impl Iterator<Item = &'a str>) -> Value {
    s.map(Value::from).collect()
}

fn labels<'a>(l: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(l.map(|(k, v)| (k.to_string(), Value::from(v))).collect())
}

fn echo(e: &Event) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), e.kind().map_or("unknown", |k| k.name()).into());
    out.insert("id".into(), e.id().into());
    out.insert("time_ns".into(), e.time_ns().into());
    if e.truncated() {
        out.insert("truncated".into(), true.into());
    }
    if let Some(code) = e.exit_code() {
        out.insert("exit_code".into(), code.into());
    }
    if let Some(path) = e.copy_path() {
        out.insert("copy_path".into(), path.into());
    }
    if let Some((id, path)) = e.cgroup() {
        out.insert("cgroup".into(), json!({"id": id, "path": path}));
    }
    if let Some((count, reason)) = e.lost() {
        out.insert("lost".into(), json!({"count": count, "reason": reason}));
    }
    if let Some(p) = e.process() {
        let [pid_ns, mnt, net, uts, ipc, user, cgroup] = p.namespaces();
        let mut process = json!({
            "pid": p.pid(), "tgid": p.tgid(), "ppid": p.ppid(), "uid": p.uid(), "gid": p.gid(),
            "comm": p.comm(), "exe": p.exe(), "argv": strings(p.argv()), "argv_truncated": p.argv_truncated(),
            "cwd": p.cwd(), "start_time_ns": p.start_time_ns(), "cgroup_id": p.cgroup_id(),
            "namespaces": {"pid": pid_ns, "mnt": mnt, "net": net, "uts": uts, "ipc": ipc, "user": user, "cgroup": cgroup},
            "ancestry": p.ancestors().map(|a| json!({
                "pid": a.pid, "comm": a.comm, "exe": a.exe, "argv": strings(a.argv)
            })).collect::<Vec<_>>(),
            "cwd_truncated": p.cwd_truncated(), "script": p.script(),
            "exe_file": {
                "inode": p.exe_inode(), "device": p.exe_device(), "mode": p.exe_mode(),
                "upper_layer": p.exe_upper_layer(), "memfd": p.exe_memfd(), "unlinked": p.exe_unlinked()
            },
            "user": p.user(), "group": p.group(), "login_user": p.login_user(),
        });
        let obj = process.as_object_mut().expect("an object");
        if let Some((device, name)) = p.tty() {
            obj.insert("tty".into(), json!({"device": device, "name": name, "pty": p.tty_is_pty()}));
        }
        if let Some(uid) = p.login_uid() {
            obj.insert("login_uid".into(), uid.into());
        }
        if let Some(sid) = p.session_id() {
            obj.insert("session_id".into(), sid.into());
        }
        out.insert("process".into(), process);
    }
    if let Some(c) = e.container() {
        let mut container = json!({
            "id": c.id(), "name": c.name(), "image": c.image(), "image_digest": c.image_digest(),
            "runtime": c.runtime().name(), "labels": labels(c.labels()), "pid": c.pid(), "privileged": c.privileged(),
            "started_at_ns": c.started_at_ns(), "network_mode": c.network_mode(),
            "networks": c.networks().map(|n| json!({
                "name": n.name, "ip": n.ip, "prefix_len": n.prefix_len, "ipv6": n.ipv6,
                "ipv6_prefix_len": n.ipv6_prefix_len, "mac": n.mac, "gateway": n.gateway
            })).collect::<Vec<_>>(),
            "ports": c.ports().map(|p| json!({
                "container_port": p.container_port, "protocol": p.protocol, "host_ip": p.host_ip, "host_port": p.host_port
            })).collect::<Vec<_>>(),
        });
        if let Some(root) = c.runs_as_root() {
            container.as_object_mut().expect("an object").insert("runs_as_root".into(), root.into());
        }
        out.insert("container".into(), container);
    }
    if let Some(p) = e.pod() {
        out.insert(
            "pod".into(),
            json!({
                "name": p.name(), "namespace": p.namespace(), "uid": p.uid(), "sandbox": p.sandbox(),
                "labels": labels(p.labels()), "ips": strings(p.ips()),
            }),
        );
    }
    Value::Object(out)
}
