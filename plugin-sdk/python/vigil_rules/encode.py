"""Events as the host packs them, from the replay file's JSON shape: what the
SDK's tests and :mod:`vigil_rules.testing` feed rules natively, so a rule's
own tests read events through the same lazy decoder as in the daemon.

Mirrors ``plugin-sdk/event/src/packed/encode.rs`` (the host's writer); the
worked example of ``docs/packed-layout.md`` is checked against both.
"""

from __future__ import annotations

import struct

from . import packed as p


class _Writer:
    def __init__(self):
        self.out = bytearray(p.HEADER_LEN)

    def put(self, fmt: str, at: int, v: int) -> None:
        struct.pack_into("<" + fmt, self.out, at, v)

    def data(self, b: bytes) -> tuple:
        off = len(self.out)
        self.out += b
        return off, len(b)

    def put_ref(self, at: int, ref: tuple) -> None:
        struct.pack_into("<II", self.out, at, *ref)

    def put_str(self, name: str, s: str) -> None:
        if s:
            self.put_ref(p.STR_AT[name], self.data(_bytes(s)))

    def table(self, count: int, size: int) -> int:
        off = len(self.out)
        self.out += bytes(count * size)
        return off

    def list(self, name: str, count: int, size: int) -> int:
        off = self.table(count, size)
        self.put_ref(p.LIST_AT[name], (off, count))
        return off

    def strings(self, name: str, items: list) -> None:
        t = self.list(name, len(items), 8)
        for i, s in enumerate(items):
            self.put_ref(t + 8 * i, self.data(_bytes(s)))

    def labels(self, name: str, labels) -> None:
        items = list(labels.items()) if isinstance(labels, dict) else list(labels)
        t = self.list(name, len(items), p.LABEL_LEN)
        for i, (k, v) in enumerate(items):
            self.put_ref(t + p.LABEL_LEN * i, self.data(_bytes(k)))
            self.put_ref(t + p.LABEL_LEN * i + 8, self.data(_bytes(v)))


def _bytes(s) -> bytes:
    """Strings as UTF-8; bytes as they are (argv may hold anything)."""
    return s if isinstance(s, (bytes, bytearray)) else str(s).encode("utf-8")


def encode_event(e: dict) -> bytes:
    """One event (a replay file's JSON object) as its packed record."""
    w = _Writer()
    flags = extra = 0
    w.put("B", p.KIND, p.EventKind.from_name(e.get("kind", "process-exec")))
    w.put("Q", p.ID, e.get("id", 0))
    w.put("Q", p.TIME, e.get("time_ns", 0))
    if e.get("exit_code") is not None:
        flags |= p.F_EXIT_CODE
        w.put("i", p.EXIT_CODE, e["exit_code"])
    proc = e.get("process")
    if proc is not None:
        flags |= p.F_PROCESS
        if proc.get("argv_truncated"):
            flags |= p.F_ARGV_TRUNCATED
        for name, at in (("pid", p.PID), ("tgid", p.TGID), ("ppid", p.PPID), ("uid", p.UID), ("gid", p.GID)):
            w.put("I", at, proc.get(name, 0))
        w.put("Q", p.START_TIME, proc.get("start_time_ns", 0))
        w.put("Q", p.CGROUP_ID, proc.get("cgroup_id", 0))
        ns = proc.get("namespaces", {})
        for i, n in enumerate(("pid", "mnt", "net", "uts", "ipc", "user", "cgroup")):
            w.put("Q", p.NAMESPACES + 8 * i, ns.get(n, 0))
        for name in ("comm", "exe", "cwd", "script", "user", "group", "login_user"):
            w.put_str(name, proc.get(name, ""))
        login_uid, session_id = proc.get("login_uid"), proc.get("session_id")
        w.put("I", p.LOGIN_UID, p.NONE_U32 if login_uid is None else login_uid)
        w.put("I", p.SESSION_ID, p.NONE_U32 if session_id is None else session_id)
        f = proc.get("exe_file", {})
        w.put("I", p.EXE_MODE, f.get("mode", 0))
        w.put("Q", p.EXE_INODE, f.get("inode", 0))
        w.put("Q", p.EXE_DEVICE, f.get("device", 0))
        pflags = 0
        for set_, flag in (
            (proc.get("cwd_truncated"), p.P_CWD_TRUNCATED),
            (f.get("upper_layer"), p.P_EXE_UPPER_LAYER),
            (f.get("memfd"), p.P_EXE_MEMFD),
            (f.get("unlinked"), p.P_EXE_UNLINKED),
        ):
            if set_:
                pflags |= flag
        tty = proc.get("tty")
        if tty is not None:
            pflags |= p.P_TTY | (p.P_TTY_PTY if tty.get("pty") else 0)
            w.put("I", p.TTY, tty.get("device", 0))
            w.put_str("tty_name", tty.get("name", ""))
        w.put("I", p.PROCESS_FLAGS, pflags)
        w.strings("argv", proc.get("argv", []))
        ancestry = proc.get("ancestry", [])
        t = w.list("ancestry", len(ancestry), p.ANCESTOR_LEN)
        for i, a in enumerate(ancestry):
            at = t + p.ANCESTOR_LEN * i
            w.put("I", at, a.get("pid", 0))
            w.put_ref(at + 4, w.data(_bytes(a.get("comm", ""))))
            w.put_ref(at + 12, w.data(_bytes(a.get("exe", ""))))
            argv = a.get("argv", [])
            table = w.table(len(argv), 8)
            for j, arg in enumerate(argv):
                w.put_ref(table + 8 * j, w.data(_bytes(arg)))
            w.put_ref(at + 20, (table, len(argv)))
    c = e.get("container")
    if c is not None:
        flags |= p.F_CONTAINER
        if c.get("privileged"):
            flags |= p.F_PRIVILEGED
        w.put("B", p.RUNTIME, p.Runtime.from_name(c.get("runtime", "unknown")))
        w.put("I", p.CONTAINER_PID, c.get("pid", 0))
        w.put("Q", p.STARTED_AT, c.get("started_at_ns", 0))
        for key, name in (("id", "container_id"), ("name", "container_name"), ("image", "image"),
                          ("image_digest", "image_digest"), ("network_mode", "network_mode")):
            w.put_str(name, c.get(key, ""))
        w.labels("container_labels", c.get("labels", {}))
        if c.get("runs_as_root") is not None:
            w.put("I", p.CONTAINER_FLAGS, p.C_RUNS_AS_ROOT_KNOWN | (p.C_RUNS_AS_ROOT if c["runs_as_root"] else 0))
        nets = c.get("networks", [])
        t = w.list("networks", len(nets), p.NETWORK_LEN)
        for i, n in enumerate(nets):
            at = t + p.NETWORK_LEN * i
            for j, key in enumerate(("name", "ip", "ipv6", "mac", "gateway")):
                w.put_ref(at + 8 * j, w.data(_bytes(n.get(key, ""))))
            w.put("B", at + 40, n.get("prefix_len", 0))
            w.put("B", at + 41, n.get("ipv6_prefix_len", 0))
        ports = c.get("ports", [])
        t = w.list("ports", len(ports), p.PORT_LEN)
        for i, port in enumerate(ports):
            at = t + p.PORT_LEN * i
            w.put("H", at, port.get("container_port", 0))
            w.put("H", at + 2, port.get("host_port", 0))
            w.put_ref(at + 4, w.data(_bytes(port.get("protocol", ""))))
            w.put_ref(at + 12, w.data(_bytes(port.get("host_ip", ""))))
    pod = e.get("pod")
    if pod is not None:
        flags |= p.F_POD
        if pod.get("sandbox"):
            extra |= p.X_POD_SANDBOX
        for key, name in (("name", "pod_name"), ("namespace", "pod_namespace"), ("uid", "pod_uid")):
            w.put_str(name, pod.get(key, ""))
        w.labels("pod_labels", pod.get("labels", {}))
        w.strings("pod_ips", pod.get("ips", []))
    if e.get("copy_path") is not None:
        w.put_str("copy_path", e["copy_path"])
    if e.get("truncated"):
        extra |= p.X_TRUNCATED
    cg = e.get("cgroup")
    if cg is not None:
        flags |= p.F_CGROUP
        w.put("Q", p.CGROUP_EVENT_ID, cg.get("id", 0))
        w.put_str("cgroup_path", cg.get("path", ""))
    lost = e.get("lost")
    if lost is not None:
        flags |= p.F_LOST
        w.put("Q", p.LOST_COUNT, lost.get("count", 0))
        w.put_str("lost_reason", lost.get("reason", ""))
    w.put("B", p.FLAGS, flags)
    w.put("B", p.EXTRA_FLAGS, extra)
    return bytes(w.out)


def encode_batch(events) -> bytes:
    """Events (JSON objects) as one packed batch."""
    records = [encode_event(e) for e in events]
    out = bytearray(p.MAGIC + struct.pack("<I", len(records)))
    offset = 8 + 4 * len(records)
    for r in records:
        out += struct.pack("<I", offset)
        offset += len(r)
    for r in records:
        out += r
    return bytes(out)
