"""Reading the packed event batch (docs/packed-layout.md) lazily.

A :class:`Batch` wraps the bytes ``on-batch`` received; its events, and their
process, container and pod, are views: a field is read from the bytes only
when it is touched. Every offset and length is checked against the record's
bounds; what falls outside reads as empty, never as an error (a record a
newer host wrote must not stop a rule). Strings that are not UTF-8 are
decoded with replacement characters.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Iterator, Optional

MAGIC = b"VGB2"

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_REF = struct.Struct("<II")


class _WitEnum(IntEnum):
    """A WIT enum, by index; named as in WIT (``process-exec``)."""

    @property
    def wit_name(self) -> str:
        """The case's name in WIT and in replay files: ``process-exec``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_name(cls, name: str):
        return cls[name.upper().replace("-", "_")]


class EventKind(_WitEnum):
    """WIT's ``event-kind``, by index."""

    PROCESS_EXEC = 0
    PROCESS_FORK = 1
    PROCESS_EXIT = 2
    CGROUP_MKDIR = 3
    CGROUP_RMDIR = 4
    CONTAINER_CREATE = 5
    CONTAINER_START = 6
    CONTAINER_STOP = 7
    CONTAINER_DELETE = 8
    EVENTS_LOST = 9
    CONTAINER_COPY_IN = 10
    CONTAINER_COPY_OUT = 11


class Runtime(_WitEnum):
    """WIT's ``runtime``, by index."""

    UNKNOWN = 0
    DOCKER = 1
    CONTAINERD = 2
    CRI_O = 3
    PODMAN = 4


# The record's fixed header (offsets from the record's first byte).
HEADER_LEN = 416
KIND, FLAGS, RUNTIME, EXTRA_FLAGS, EXIT_CODE = 0, 1, 2, 3, 4
ID, TIME = 8, 16
PID, TGID, PPID, UID, GID, CONTAINER_PID = 24, 28, 32, 36, 40, 44
START_TIME, CGROUP_ID, NAMESPACES = 48, 56, 64
STARTED_AT, LOST_COUNT, CGROUP_EVENT_ID = 120, 128, 136
LOGIN_UID, SESSION_ID, TTY, EXE_MODE, EXE_INODE, EXE_DEVICE = 288, 292, 296, 300, 304, 312
PROCESS_FLAGS, CONTAINER_FLAGS = 320, 376

# String refs, in the header's order (two runs: 144 and 328).
STRINGS = (
    "comm", "exe", "cwd", "container_id", "container_name", "image", "image_digest",
    "pod_name", "pod_namespace", "pod_uid", "cgroup_path", "lost_reason", "user", "group",
)
STRINGS_2 = ("script", "login_user", "tty_name", "network_mode", "copy_path")
STR_AT = {name: 144 + 8 * i for i, name in enumerate(STRINGS)}
STR_AT.update({name: 328 + 8 * i for i, name in enumerate(STRINGS_2)})
# List slots (offset:u32, count:u32).
LIST_AT = {
    "argv": 256, "ancestry": 264, "container_labels": 272, "pod_labels": 280,
    "networks": 384, "ports": 392, "pod_ips": 400,
}
ANCESTOR_LEN, NETWORK_LEN, PORT_LEN, LABEL_LEN = 28, 48, 24, 16

F_PROCESS, F_CONTAINER, F_POD, F_CGROUP = 1, 2, 4, 8
F_EXIT_CODE, F_LOST, F_ARGV_TRUNCATED, F_PRIVILEGED = 16, 32, 64, 128
X_POD_SANDBOX, X_TRUNCATED = 1, 2
P_CWD_TRUNCATED, P_TTY, P_TTY_PTY = 1, 2, 4
P_EXE_UPPER_LAYER, P_EXE_MEMFD, P_EXE_UNLINKED = 8, 16, 32
C_RUNS_AS_ROOT_KNOWN, C_RUNS_AS_ROOT = 1, 2
NONE_U32 = 0xFFFFFFFF

SHELLS = frozenset(
    ["sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "pdksh", "yash", "posh", "rbash", "csh", "tcsh", "fish"]
)
MULTI_CALL = frozenset(["busybox", "toybox"])


def basename(path: str) -> str:
    """What follows the last ``/``."""
    return path.rsplit("/", 1)[-1]


def strip_version(name: str) -> str:
    """A program name without its version suffix: ``python3.11`` -> ``python``."""
    return name.rstrip("0123456789.")


class BadBatch(ValueError):
    """The bytes are not a packed batch (wrong magic, too short)."""


class _Record:
    """One event's bytes: reads that never fail (outside reads as zero or empty)."""

    __slots__ = ("buf", "start", "end")

    def __init__(self, buf: memoryview, start: int, end: int):
        self.buf, self.start, self.end = buf, start, end

    def _fits(self, at: int, size: int) -> bool:
        return 0 <= at and self.start + at + size <= self.end

    def u8(self, at: int) -> int:
        return _U8.unpack_from(self.buf, self.start + at)[0] if self._fits(at, 1) else 0

    def u16(self, at: int) -> int:
        return _U16.unpack_from(self.buf, self.start + at)[0] if self._fits(at, 2) else 0

    def u32(self, at: int) -> int:
        return _U32.unpack_from(self.buf, self.start + at)[0] if self._fits(at, 4) else 0

    def i32(self, at: int) -> int:
        return _I32.unpack_from(self.buf, self.start + at)[0] if self._fits(at, 4) else 0

    def u64(self, at: int) -> int:
        return _U64.unpack_from(self.buf, self.start + at)[0] if self._fits(at, 8) else 0

    def ref(self, at: int) -> str:
        """The string a ref at ``at`` points to ("" when out of bounds)."""
        if not self._fits(at, 8):
            return ""
        off, length = _REF.unpack_from(self.buf, self.start + at)
        if length == 0 or not self._fits(off, length):
            return ""
        return bytes(self.buf[self.start + off : self.start + off + length]).decode("utf-8", "replace")

    def entries(self, slot_at: int, size: int) -> range:
        """Offsets of a list's entries, cut to what the record holds."""
        if not self._fits(slot_at, 8):
            return range(0)
        off, count = _REF.unpack_from(self.buf, self.start + slot_at)
        room = max(0, (self.end - self.start - off) // size) if off >= 0 else 0
        return range(off, off + size * min(count, room), size)

    def strings(self, slot_at: int) -> list:
        return [self.ref(at) for at in self.entries(slot_at, 8)]

    def labels(self, slot_at: int) -> dict:
        return {self.ref(at): self.ref(at + 8) for at in self.entries(slot_at, LABEL_LEN)}


class Batch:
    """The events of one ``on-batch`` call."""

    __slots__ = ("_buf", "_count", "_offsets")

    def __init__(self, data: bytes):
        buf = memoryview(data)
        if len(buf) < 8 or bytes(buf[:4]) != MAGIC:
            raise BadBatch(f"not a packed batch (magic {bytes(buf[:4])!r}, {len(buf)} bytes)")
        count = _U32.unpack_from(buf, 4)[0]
        count = min(count, (len(buf) - 8) // 4)
        self._buf, self._count = buf, count
        self._offsets = [_U32.unpack_from(buf, 8 + 4 * i)[0] for i in range(count)]

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> "Event":
        if not 0 <= i < self._count:
            raise IndexError(i)
        start = self._offsets[i]
        end = self._offsets[i + 1] if i + 1 < self._count else len(self._buf)
        end = max(start, min(end, len(self._buf)))
        return Event(_Record(self._buf, start, end))

    def __iter__(self) -> Iterator["Event"]:
        return (self[i] for i in range(self._count))


class Event:
    """One event. ``process``, ``container`` and ``pod`` are ``None`` when absent."""

    __slots__ = ("_r",)

    def __init__(self, record: _Record):
        self._r = record

    def _flag(self, f: int) -> bool:
        return bool(self._r.u8(FLAGS) & f)

    @property
    def kind(self) -> Optional[EventKind]:
        """The event's kind; ``None`` for a kind newer than this SDK."""
        try:
            return EventKind(self._r.u8(KIND))
        except ValueError:
            return None

    def is_(self, kind: EventKind) -> bool:
        return self._r.u8(KIND) == kind

    @property
    def id(self) -> int:
        return self._r.u64(ID)

    @property
    def time_ns(self) -> int:
        return self._r.u64(TIME)

    @property
    def process(self) -> Optional["Process"]:
        return Process(self._r) if self._flag(F_PROCESS) else None

    @property
    def container(self) -> Optional["Container"]:
        return Container(self._r) if self._flag(F_CONTAINER) else None

    @property
    def pod(self) -> Optional["Pod"]:
        return Pod(self._r) if self._flag(F_POD) else None

    @property
    def in_container(self) -> bool:
        return self._flag(F_CONTAINER)

    @property
    def exit_code(self) -> Optional[int]:
        return self._r.i32(EXIT_CODE) if self._flag(F_EXIT_CODE) else None

    @property
    def cgroup(self) -> Optional[tuple]:
        """``(id, path)`` of a cgroup event."""
        return (self._r.u64(CGROUP_EVENT_ID), self._r.ref(STR_AT["cgroup_path"])) if self._flag(F_CGROUP) else None

    @property
    def lost(self) -> Optional[tuple]:
        """``(count, reason)`` of an ``events-lost`` event."""
        return (self._r.u64(LOST_COUNT), self._r.ref(STR_AT["lost_reason"])) if self._flag(F_LOST) else None

    @property
    def copy_path(self) -> Optional[str]:
        """The path of a ``container-copy-in``/``-out`` event."""
        if self.kind not in (EventKind.CONTAINER_COPY_IN, EventKind.CONTAINER_COPY_OUT):
            return None
        return self._r.ref(STR_AT["copy_path"])

    @property
    def truncated(self) -> bool:
        """The host cut this event's strings or lists to its bounds."""
        return bool(self._r.u8(EXTRA_FLAGS) & X_TRUNCATED)

    @property
    def is_entrypoint(self) -> bool:
        """The process is its container's first process (its entrypoint)."""
        c, p = self.container, self.process
        return bool(c and p and c.pid != 0 and c.pid == p.tgid)


class Ancestor:
    """A process up the tree: pid, task name, executable, argv."""

    __slots__ = ("pid", "comm", "exe", "argv")

    def __init__(self, pid: int, comm: str, exe: str, argv: list):
        self.pid, self.comm, self.exe, self.argv = pid, comm, exe, argv

    def __repr__(self) -> str:
        return f"Ancestor(pid={self.pid}, comm={self.comm!r}, exe={self.exe!r})"


class Process:
    """The process of an event (for a container event, its first process)."""

    __slots__ = ("_r",)

    def __init__(self, record: _Record):
        self._r = record

    pid = property(lambda self: self._r.u32(PID), doc="Thread id.")
    tgid = property(lambda self: self._r.u32(TGID), doc="Process id.")
    ppid = property(lambda self: self._r.u32(PPID))
    uid = property(lambda self: self._r.u32(UID))
    gid = property(lambda self: self._r.u32(GID))
    start_time_ns = property(lambda self: self._r.u64(START_TIME))
    cgroup_id = property(lambda self: self._r.u64(CGROUP_ID))
    comm = property(lambda self: self._r.ref(STR_AT["comm"]), doc="The kernel's task name (16 bytes at most).")
    exe = property(lambda self: self._r.ref(STR_AT["exe"]), doc="The executable's path.")
    cwd = property(lambda self: self._r.ref(STR_AT["cwd"]))
    script = property(lambda self: self._r.ref(STR_AT["script"]), doc="The script a `#!` interpreter runs.")
    user = property(lambda self: self._r.ref(STR_AT["user"]))
    group = property(lambda self: self._r.ref(STR_AT["group"]))
    login_user = property(lambda self: self._r.ref(STR_AT["login_user"]))
    exe_inode = property(lambda self: self._r.u64(EXE_INODE))
    exe_device = property(lambda self: self._r.u64(EXE_DEVICE))
    exe_mode = property(lambda self: self._r.u32(EXE_MODE))

    def _pflag(self, f: int) -> bool:
        return bool(self._r.u32(PROCESS_FLAGS) & f)

    cwd_truncated = property(lambda self: self._pflag(P_CWD_TRUNCATED))
    exe_upper_layer = property(lambda self: self._pflag(P_EXE_UPPER_LAYER), doc="Written in the container.")
    exe_memfd = property(lambda self: self._pflag(P_EXE_MEMFD))
    exe_unlinked = property(lambda self: self._pflag(P_EXE_UNLINKED))
    argv_truncated = property(lambda self: bool(self._r.u8(FLAGS) & F_ARGV_TRUNCATED))

    @property
    def exe_fileless(self) -> bool:
        """Run from memory or from a deleted file."""
        return self.exe_memfd or self.exe_unlinked

    @property
    def namespaces(self) -> dict:
        names = ("pid", "mnt", "net", "uts", "ipc", "user", "cgroup")
        return {n: self._r.u64(NAMESPACES + 8 * i) for i, n in enumerate(names)}

    @property
    def tty(self) -> Optional[tuple]:
        """``(device, name)`` of its controlling terminal."""
        return (self._r.u32(TTY), self._r.ref(STR_AT["tty_name"])) if self._pflag(P_TTY) else None

    tty_is_pty = property(lambda self: self._pflag(P_TTY_PTY))

    @property
    def login_uid(self) -> Optional[int]:
        v = self._r.u32(LOGIN_UID)
        return None if v == NONE_U32 else v

    @property
    def session_id(self) -> Optional[int]:
        v = self._r.u32(SESSION_ID)
        return None if v == NONE_U32 else v

    @property
    def argv(self) -> list:
        return self._r.strings(LIST_AT["argv"])

    def arg(self, i: int) -> Optional[str]:
        argv = self.argv
        return argv[i] if 0 <= i < len(argv) else None

    @property
    def args(self) -> list:
        """argv without argv[0]."""
        return self.argv[1:]

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)

    @property
    def exe_basename(self) -> str:
        return basename(self.exe)

    @property
    def ancestors(self) -> list:
        """Parent first, up to the container's first process (or init)."""
        r, out = self._r, []
        for at in r.entries(LIST_AT["ancestry"], ANCESTOR_LEN):
            out.append(Ancestor(r.u32(at), r.ref(at + 4), r.ref(at + 12), r.strings(at + 20)))
        return out

    @property
    def parent(self) -> Optional[Ancestor]:
        a = self.ancestors
        return a[0] if a else None

    def has_ancestor(self, name: str) -> bool:
        """An ancestor's task name or executable file name is ``name``."""
        return any(a.comm == name or basename(a.exe) == name for a in self.ancestors)

    def argv_contains(self, needle: str) -> bool:
        """An argument is exactly ``needle``."""
        return needle in self.argv

    def argv_contains_substr(self, needle: str) -> bool:
        """An argument contains ``needle``."""
        return any(needle in a for a in self.argv)

    def _program_and_args(self) -> tuple:
        exe, argv = self.exe_basename, self.argv
        if exe not in MULTI_CALL:
            return exe, argv[1:]
        applet = basename(argv[0]) if argv else ""
        if applet in MULTI_CALL:
            return (basename(argv[1]) if len(argv) > 1 else exe), argv[2:]
        return applet, argv[1:]

    @property
    def program(self) -> str:
        """The program as it thinks of itself: the executable's file name, or
        for busybox and toybox the applet (argv[0], or argv[1] in
        ``busybox APPLET ...``)."""
        return self._program_and_args()[0]

    @property
    def program_args(self) -> list:
        """The program's own arguments (after the applet for busybox)."""
        return self._program_and_args()[1]

    @property
    def is_shell(self) -> bool:
        return self.program in SHELLS

    @property
    def shell_script(self) -> Optional[str]:
        """For a shell given ``-c SCRIPT`` (``bash -eo pipefail -c ...``), the script."""
        program, args = self._program_and_args()  # argv decoded once
        if program not in SHELLS:
            return None
        command_string, i = False, 0
        while i < len(args):
            a = args[i]
            i += 1
            if a == "--":
                break
            if a in ("--rcfile", "--init-file"):
                i += 1
            elif a.startswith("--"):
                pass
            elif len(a) > 1 and a[0] in "-+":
                command_string |= a[0] == "-" and "c" in a[1:]
                i += sum(1 for f in a[1:] if f in "oO")
            else:
                return a if command_string else None
        return args[i] if command_string and i < len(args) else None


class Network:
    __slots__ = ("name", "ip", "ipv6", "mac", "gateway", "prefix_len", "ipv6_prefix_len")

    def __init__(self, r: _Record, at: int):
        self.name, self.ip, self.ipv6, self.mac, self.gateway = (r.ref(at + 8 * j) for j in range(5))
        self.prefix_len, self.ipv6_prefix_len = r.u8(at + 40), r.u8(at + 41)


class Port:
    __slots__ = ("container_port", "host_port", "protocol", "host_ip")

    def __init__(self, r: _Record, at: int):
        self.container_port, self.host_port = r.u16(at), r.u16(at + 2)
        self.protocol, self.host_ip = r.ref(at + 4), r.ref(at + 12)


class Container:
    """The container of an event, as its runtime describes it."""

    __slots__ = ("_r",)

    def __init__(self, record: _Record):
        self._r = record

    id = property(lambda self: self._r.ref(STR_AT["container_id"]))
    name = property(lambda self: self._r.ref(STR_AT["container_name"]))
    image = property(lambda self: self._r.ref(STR_AT["image"]))
    image_digest = property(lambda self: self._r.ref(STR_AT["image_digest"]))
    network_mode = property(lambda self: self._r.ref(STR_AT["network_mode"]))
    pid = property(lambda self: self._r.u32(CONTAINER_PID), doc="Its first process (host pid).")
    started_at_ns = property(lambda self: self._r.u64(STARTED_AT))
    privileged = property(lambda self: bool(self._r.u8(FLAGS) & F_PRIVILEGED))
    labels = property(lambda self: self._r.labels(LIST_AT["container_labels"]))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def runtime(self) -> Runtime:
        try:
            return Runtime(self._r.u8(RUNTIME))
        except ValueError:
            return Runtime.UNKNOWN

    @property
    def runs_as_root(self) -> Optional[bool]:
        f = self._r.u32(CONTAINER_FLAGS)
        return bool(f & C_RUNS_AS_ROOT) if f & C_RUNS_AS_ROOT_KNOWN else None

    def label(self, key: str) -> Optional[str]:
        return self.labels.get(key)

    @property
    def networks(self) -> list:
        return [Network(self._r, at) for at in self._r.entries(LIST_AT["networks"], NETWORK_LEN)]

    @property
    def ports(self) -> list:
        return [Port(self._r, at) for at in self._r.entries(LIST_AT["ports"], PORT_LEN)]


class Pod:
    """The Kubernetes pod of an event's container."""

    __slots__ = ("_r",)

    def __init__(self, record: _Record):
        self._r = record

    name = property(lambda self: self._r.ref(STR_AT["pod_name"]))
    namespace = property(lambda self: self._r.ref(STR_AT["pod_namespace"]))
    uid = property(lambda self: self._r.ref(STR_AT["pod_uid"]))
    sandbox = property(lambda self: bool(self._r.u8(EXTRA_FLAGS) & X_POD_SANDBOX), doc="The pause container.")
    labels = property(lambda self: self._r.labels(LIST_AT["pod_labels"]))
    ips = property(lambda self: self._r.strings(LIST_AT["pod_ips"]))
