"""The SDK's decoder and encoder against the spec page and the Rust SDK's
behaviour: the worked example byte for byte, every field round-tripping,
bad bytes read as empty, the detection helpers."""

import re
import struct
from pathlib import Path

import pytest

from vigil_rules import Batch, EventKind, Runtime
from vigil_rules.encode import encode_batch
from vigil_rules.packed import BadBatch
from vigil_rules.testing import exec

SPEC = Path(__file__).resolve().parents[3] / "docs" / "packed-layout.md"


def worked_example() -> bytes:
    block = SPEC.read_text().split("## Worked example", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return bytes.fromhex("".join(re.sub(r"^[0-9a-f]{4}:", "", l) for l in block.strip().splitlines()))


def test_the_worked_example_of_the_spec_page_holds():
    spec = worked_example()
    event = {
        "kind": "process-exec", "id": 7, "time_ns": 1_700_000_000_000_000_000,
        "process": {"pid": 42, "tgid": 42, "ppid": 1, "comm": "sh", "exe": "/bin/sh", "cwd": "/",
                    "argv": ["sh", "-c", "id"]},
    }
    assert encode_batch([event]) == spec, "the encoder writes the spec's bytes"
    e = Batch(spec)[0]
    assert (e.kind, e.id, e.time_ns) == (EventKind.PROCESS_EXEC, 7, 1_700_000_000_000_000_000)
    p = e.process
    assert (p.pid, p.tgid, p.ppid, p.comm, p.exe, p.cwd, p.argv) == (42, 42, 1, "sh", "/bin/sh", "/", ["sh", "-c", "id"])
    assert e.container is None and e.pod is None and p.login_uid is None


def test_every_field_round_trips():
    full = {
        "kind": "process-exec", "id": 9, "time_ns": 5, "exit_code": -3, "truncated": True,
        "process": {
            "pid": 1, "tgid": 2, "ppid": 3, "uid": 4, "gid": 5, "comm": "c", "exe": "/x/e", "cwd": "/w",
            "argv": ["e", "a" * 5000, "é"], "argv_truncated": True, "start_time_ns": 6, "cgroup_id": 7,
            "namespaces": {"pid": 11, "mnt": 12, "net": 13, "uts": 14, "ipc": 15, "user": 16, "cgroup": 17},
            "ancestry": [{"pid": 8, "comm": "p", "exe": "/bin/p", "argv": ["p", "-x"]}, {"pid": 1, "comm": "init"}],
            "cwd_truncated": True, "script": "/s.sh", "user": "u", "group": "g", "login_user": "lu",
            "login_uid": 1000, "session_id": 0, "tty": {"device": 34816, "name": "pts/0", "pty": True},
            "exe_file": {"inode": 21, "device": 22, "mode": 0o104755, "upper_layer": True, "memfd": True},
        },
        "container": {
            "id": "f" * 64, "name": "web", "image": "nginx:1", "image_digest": "sha256:00", "runtime": "podman",
            "labels": {f"k{i}": f"v{i}" for i in range(300)}, "pid": 2, "privileged": True, "started_at_ns": 99,
            "network_mode": "bridge", "runs_as_root": False,
            "networks": [{"name": "n", "ip": "10.0.0.2", "prefix_len": 24, "ipv6": "fd00::2", "ipv6_prefix_len": 64,
                          "mac": "02:42", "gateway": "10.0.0.1"}],
            "ports": [{"container_port": 80, "protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 8080}],
        },
        "pod": {"name": "p", "namespace": "ns", "uid": "u-1", "sandbox": True, "labels": {"app": "x"},
                "ips": ["10.1.0.5", "fd01::5"]},
    }
    e = Batch(encode_batch([full]))[0]
    assert (e.id, e.time_ns, e.exit_code, e.truncated) == (9, 5, -3, True)
    p = e.process
    assert (p.pid, p.tgid, p.ppid, p.uid, p.gid, p.comm, p.exe, p.cwd) == (1, 2, 3, 4, 5, "c", "/x/e", "/w")
    assert p.argv == ["e", "a" * 5000, "é"] and p.argv_truncated
    assert (p.start_time_ns, p.cgroup_id) == (6, 7)
    assert p.namespaces == {"pid": 11, "mnt": 12, "net": 13, "uts": 14, "ipc": 15, "user": 16, "cgroup": 17}
    assert [(a.pid, a.comm, a.exe, a.argv) for a in p.ancestors] == [(8, "p", "/bin/p", ["p", "-x"]), (1, "init", "", [])]
    assert (p.cwd_truncated, p.script, p.user, p.group, p.login_user) == (True, "/s.sh", "u", "g", "lu")
    assert (p.login_uid, p.session_id, p.tty, p.tty_is_pty) == (1000, 0, (34816, "pts/0"), True)
    assert (p.exe_inode, p.exe_device, p.exe_mode) == (21, 22, 0o104755)
    assert (p.exe_upper_layer, p.exe_memfd, p.exe_unlinked, p.exe_fileless) == (True, True, False, True)
    c = e.container
    assert (c.id, c.short_id, c.name, c.image, c.image_digest) == ("f" * 64, "f" * 12, "web", "nginx:1", "sha256:00")
    assert (c.runtime, c.pid, c.privileged, c.started_at_ns, c.network_mode) == (Runtime.PODMAN, 2, True, 99, "bridge")
    assert c.runs_as_root is False and len(c.labels) == 300 and c.label("k299") == "v299"
    n = c.networks[0]
    assert (n.name, n.ip, n.prefix_len, n.ipv6, n.ipv6_prefix_len, n.mac, n.gateway) == (
        "n", "10.0.0.2", 24, "fd00::2", 64, "02:42", "10.0.0.1")
    port = c.ports[0]
    assert (port.container_port, port.protocol, port.host_ip, port.host_port) == (80, "tcp", "0.0.0.0", 8080)
    pod = e.pod
    assert (pod.name, pod.namespace, pod.uid, pod.sandbox, pod.labels, pod.ips) == (
        "p", "ns", "u-1", True, {"app": "x"}, ["10.1.0.5", "fd01::5"])
    assert e.is_entrypoint


def test_other_kinds_carry_their_parts():
    events = [
        {"kind": "container-copy-in", "copy_path": "/etc/x", "container": {"id": "c"}},
        {"kind": "events-lost", "lost": {"count": 12, "reason": "ring-buffer-full"}},
        {"kind": "cgroup-mkdir", "cgroup": {"id": 4, "path": "/docker/c"}},
        {"kind": "process-exit", "exit_code": 1, "process": {"pid": 3}},
    ]
    copy, lost, cg, exit_ = Batch(encode_batch(events))
    assert (copy.kind, copy.copy_path) == (EventKind.CONTAINER_COPY_IN, "/etc/x")
    assert lost.lost == (12, "ring-buffer-full") and lost.process is None
    assert cg.cgroup == (4, "/docker/c")
    assert (exit_.kind, exit_.exit_code, exit_.process.pid) == (EventKind.PROCESS_EXIT, 1, 3)


def test_non_utf8_argv_reads_with_replacement():
    e = Batch(encode_batch([{"kind": "process-exec", "process": {"argv": [b"\xff\xfeok", "x"]}}]))[0]
    assert e.process.argv == ["\ufffd\ufffdok", "x"]


def test_bad_bytes_are_refused_or_read_as_empty():
    with pytest.raises(BadBatch):
        Batch(b"nope")
    good = bytearray(encode_batch([exec("/bin/sh", ["sh", "-c", "id"])]))
    # A ref pointing past the record, and a huge list count: empty, and cut.
    struct.pack_into("<II", good, 12 + 144, 10_000_000, 5)
    struct.pack_into("<II", good, 12 + 256, 420, 0xFFFFFFFF)
    p = Batch(bytes(good))[0].process
    assert p.comm == ""
    assert len(p.argv) < 100
    # A count larger than the offsets the batch holds is cut too.
    truncated = bytes(good[:4]) + struct.pack("<I", 1000) + bytes(good[8:])
    assert len(Batch(truncated)) < 1000
    # A record cut short: every field reads as zero or empty.
    e = Batch(bytes(good[:40]))[0]
    assert e.process is not None and e.process.exe == "" and e.process.argv == []


@pytest.mark.parametrize("exe,argv,script", [
    ("/bin/sh", ["sh", "-c", "id"], "id"),
    ("/bin/bash", ["bash", "-eo", "pipefail", "-c", "curl x | sh"], "curl x | sh"),
    ("/bin/bash", ["bash", "-ec", "id"], "id"),
    ("/bin/bash", ["bash", "--rcfile", "/x", "-c", "id"], "id"),
    ("/bin/sh", ["sh", "-c", "--", "id"], "id"),
    ("/bin/sh", ["sh", "-o", "errexit", "-c", "id", "name"], "id"),
    ("/bin/busybox", ["busybox", "sh", "-c", "id"], "id"),
    ("/bin/sh", ["sh", "/entrypoint.sh"], None),
    ("/usr/bin/python3", ["python3", "-c", "print(1)"], None),
])
def test_shell_script(exe, argv, script):
    assert Batch(encode_batch([exec(exe, argv)]))[0].process.shell_script == script


def test_program_sees_through_busybox():
    p = lambda exe, argv: Batch(encode_batch([exec(exe, argv)]))[0].process
    assert p("/bin/busybox", ["wget", "-q", "x"]).program == "wget"
    assert p("/bin/busybox", ["busybox", "wget", "x"]).program_args == ["x"]
    assert p("/bin/busybox", ["ash"]).is_shell
    assert p("/usr/bin/wget", ["wget"]).program == "wget"
