"""Testing rules natively (CPython, no WebAssembly): build events, or read a
replay file, and run a rule over them as the daemon would: the events are
packed into a batch and read back through the same lazy decoder.

    from vigil_rules.testing import exec, run

    alerts = run(my_rule, [exec("/usr/bin/curl", ["curl", "http://x"]).container("web", "nginx")])
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from .encode import encode_batch
from .packed import EventKind
from ._rule import Rule

_ids = itertools.count(1)


class EventSpec(dict):
    """An event as a replay file holds it, with builder methods."""

    def container(self, name: str, image: str, **fields) -> "EventSpec":
        """In a container (a runtime's description: id, labels, privileged, pid, ...)."""
        c = {"id": f"{abs(hash(name)):064x}"[:64], "name": name, "image": image, "runtime": "containerd"}
        c.update(fields)
        self["container"] = c
        return self

    def pod(self, name: str, namespace: str, **fields) -> "EventSpec":
        self["pod"] = {"name": name, "namespace": namespace, **fields}
        return self

    def parent(self, comm: str, exe: str = "", argv=None, pid: int = 1) -> "EventSpec":
        """Adds an ancestor (the first call the parent, the next its parent...)."""
        self["process"].setdefault("ancestry", []).append(
            {"pid": pid, "comm": comm, "exe": exe or f"/usr/bin/{comm}", "argv": list(argv or [comm])}
        )
        return self

    def process(self, **fields) -> "EventSpec":
        """Sets process fields (``uid``, ``cwd``, ``tty``, ``exe_file``, ...)."""
        self["process"].update(fields)
        return self

    def entrypoint(self) -> "EventSpec":
        """Its process is its container's first process."""
        self["container"]["pid"] = self["process"]["tgid"]
        return self


def exec(exe: str, argv, pid: int = 4242) -> EventSpec:
    """A ``process-exec`` of ``exe`` with ``argv``, on the host."""
    argv = list(argv)
    comm = (exe.rsplit("/", 1)[-1])[:15]
    return EventSpec(
        kind="process-exec",
        id=next(_ids),
        time_ns=1_700_000_000_000_000_000,
        process={"pid": pid, "tgid": pid, "ppid": 1, "uid": 0, "gid": 0, "comm": comm, "exe": exe,
                 "argv": argv, "cwd": "/"},
    )


def event(kind: EventKind, **fields) -> EventSpec:
    """Any event kind, with the replay file's fields."""
    return EventSpec(kind=kind.wit_name, id=next(_ids), time_ns=1_700_000_000_000_000_000, **fields)


def replay(path) -> list:
    """The events of a replay file (``vigil record``'s JSON lines)."""
    events = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        obj = json.loads(line)
        if "vigil-replay" in obj:
            continue
        if "kind" not in obj:
            raise ValueError(f"{path}:{n}: not an event")
        events.append(obj)
    return events


def run(rule: Rule, events) -> list:
    """The alerts ``rule`` raises over ``events``, given as the daemon would:
    only the kinds it subscribes to, in one batch."""
    wanted = {k.wit_name for k in rule.subscribe}
    batch = encode_batch([e for e in events if e.get("kind", "process-exec") in wanted])
    return [a for _, a in rule.alerts(batch)]
