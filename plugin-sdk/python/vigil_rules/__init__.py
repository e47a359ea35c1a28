"""Vigil detection rules in Python.

A rule is a function over events, declared with :func:`rule`; the SDK reads
the daemon's packed event batches lazily (:mod:`vigil_rules.packed`) and
writes the alerts it returns. ``python -m vigil_rules build rule.py`` makes
it a WebAssembly component with componentize-py; :mod:`vigil_rules.testing`
runs it natively in the rule's own tests.
"""

from .packed import Ancestor, Batch, Container, Event, EventKind, Pod, Process, Runtime, basename, strip_version
from ._rule import Alert, Pack, Priority, Rule, log, pack, rule

__all__ = [
    "Alert", "Ancestor", "Pack", "pack", "Batch", "Container", "Event", "EventKind", "Pod", "Priority", "Process", "Rule",
    "Runtime", "basename", "log", "rule", "strip_version",
]
