"""Conformance rule ``echo-all-py`` (Python): the twin of tests/rules/echo-all
(Rust). For every event of every kind, one alert whose field ``echo`` is the
event as it read it, every field through the SDK's accessors, in the replay
file's JSON shape; ``seen`` counts events in its state (handed over on a hot
reload). The echo is cut into fields ``echo.00``, ``echo.01``... of 1,000
characters. Its config accepts only ``{}``."""

import json

from vigil_rules import Alert, EventKind, rule


def echo(e):
    out = {"kind": e.kind.wit_name if e.kind is not None else "unknown", "id": e.id, "time_ns": e.time_ns}
    if e.truncated:
        out["truncated"] = True
    if e.exit_code is not None:
        out["exit_code"] = e.exit_code
    if e.copy_path is not None:
        out["copy_path"] = e.copy_path
    if e.cgroup is not None:
        out["cgroup"] = {"id": e.cgroup[0], "path": e.cgroup[1]}
    if e.lost is not None:
        out["lost"] = {"count": e.lost[0], "reason": e.lost[1]}
    p = e.process
    if p is not None:
        process = {
            "pid": p.pid, "tgid": p.tgid, "ppid": p.ppid, "uid": p.uid, "gid": p.gid, "comm": p.comm,
            "exe": p.exe, "argv": p.argv, "argv_truncated": p.argv_truncated, "cwd": p.cwd,
            "start_time_ns": p.start_time_ns, "cgroup_id": p.cgroup_id, "namespaces": p.namespaces,
            "ancestry": [{"pid": a.pid, "comm": a.comm, "exe": a.exe, "argv": a.argv} for a in p.ancestors],
            "cwd_truncated": p.cwd_truncated, "script": p.script,
            "exe_file": {"inode": p.exe_inode, "device": p.exe_device, "mode": p.exe_mode,
                         "upper_layer": p.exe_upper_layer, "memfd": p.exe_memfd, "unlinked": p.exe_unlinked},
            "user": p.user, "group": p.group, "login_user": p.login_user,
        }
        if p.tty is not None:
            process["tty"] = {"device": p.tty[0], "name": p.tty[1], "pty": p.tty_is_pty}
        if p.login_uid is not None:
            process["login_uid"] = p.login_uid
        if p.session_id is not None:
            process["session_id"] = p.session_id
        out["process"] = process
    c = e.container
    if c is not None:
        container = {
            "id": c.id, "name": c.name, "image": c.image, "image_digest": c.image_digest,
            "runtime": c.runtime.wit_name, "labels": c.labels, "pid": c.pid, "privileged": c.privileged,
            "started_at_ns": c.started_at_ns, "network_mode": c.network_mode,
            "networks": [{"name": n.name, "ip": n.ip, "prefix_len": n.prefix_len, "ipv6": n.ipv6,
                          "ipv6_prefix_len": n.ipv6_prefix_len, "mac": n.mac, "gateway": n.gateway}
                         for n in c.networks],
            "ports": [{"container_port": x.container_port, "protocol": x.protocol, "host_ip": x.host_ip,
                       "host_port": x.host_port} for x in c.ports],
        }
        if c.runs_as_root is not None:
            container["runs_as_root"] = c.runs_as_root
        out["container"] = container
    pod = e.pod
    if pod is not None:
        out["pod"] = {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "sandbox": pod.sandbox,
                      "labels": pod.labels, "ips": pod.ips}
    return out


@rule(id="echo-all-py", subscribe=list(EventKind), tags=["test"], config={}, state=lambda: {"seen": 0})
def echo_all(event, state):
    """Echoes every event."""
    state["seen"] += 1
    text = json.dumps(echo(event), ensure_ascii=False)
    alert = Alert.notice(f"echo {event.id}").field("seen", state["seen"])
    for i in range(0, len(text), 1000):  # the host caps a field at 4 KiB
        alert.field(f"echo.{i // 1000:02}", text[i : i + 1000])
    return alert
