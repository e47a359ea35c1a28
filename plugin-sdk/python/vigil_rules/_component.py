"""The component's export of ``vigil:rules/detector``: what
``python -m vigil_rules build`` wires a rule module to. Imported only inside
the component (``wit_world`` exists there)."""

from __future__ import annotations

import io
import traceback  # noqa: F401  (imported now: an exception formats its traceback at run time)
import sys

from wit_world import exports
from wit_world.imports import host
from componentize_py_types import Err

from . import _rule

_LEVELS = {
    "trace": host.LogLevel.TRACE,
    "debug": host.LogLevel.DEBUG,
    "info": host.LogLevel.INFO,
    "warn": host.LogLevel.WARN,
    "warning": host.LogLevel.WARN,
    "error": host.LogLevel.ERROR,
}


def _host_log(level: str, message: str) -> None:
    host.log(_LEVELS.get(level, host.LogLevel.INFO), message)


class _HostLines(io.TextIOBase):
    """print() in a rule goes to the daemon's log (WASI stdout is not granted)."""

    def __init__(self, level: str):
        self.level, self.pending = level, ""

    def write(self, s: str) -> int:
        self.pending += s
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            _host_log(self.level, line)
        return len(s)


_rule._logger = _host_log
sys.stdout, sys.stderr = _HostLines("info"), _HostLines("warn")


_EXPORTED = []


def _the_rule():
    if not _EXPORTED:
        _EXPORTED.append(_rule.component_rule())
    return _EXPORTED[0]


def _logged(e: BaseException) -> str:
    """Logs an exception with its frames (no source lines: reading them
    would need the host's files), and returns its one-line form."""
    frames = traceback.StackSummary.extract(traceback.walk_tb(e.__traceback__), lookup_lines=False)
    where = " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in reversed(frames))
    text = f"{type(e).__name__}: {e}"
    _host_log("error", f"{text} at {where}")
    return text


class Detector(exports.Detector):
    def metadata(self) -> str:
        try:
            return _the_rule().metadata()
        except Exception as e:
            raise RuntimeError(_logged(e)) from None

    def init(self, config: str) -> None:
        try:
            _the_rule().init(config)
        except Exception as e:
            raise Err(_logged(e)) from None

    def on_batch(self, batch: bytes) -> str:
        try:
            return _the_rule().on_batch(batch)
        except Exception as e:
            raise RuntimeError(_logged(e)) from None

    def snapshot(self):
        try:
            return _the_rule().snapshot()
        except Exception as e:
            raise RuntimeError(_logged(e)) from None

    def restore(self, state: bytes) -> None:
        try:
            _the_rule().restore(state)
        except Exception as e:
            raise Err(_logged(e)) from None
