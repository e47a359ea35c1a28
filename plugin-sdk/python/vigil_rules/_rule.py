"""Rules: the ``@rule`` decorator, alerts, and running a rule over a batch
(the same code natively, in a rule's tests, and in the component)."""

from __future__ import annotations

import inspect
import json
import re
import sys
from enum import Enum
from typing import Callable, Iterable, Optional

from .encode import encode_batch
from .packed import Batch, BadBatch, Event, EventKind


class Priority(Enum):
    """WIT's ``priority``, most severe first."""

    EMERGENCY = "emergency"
    ALERT = "alert"
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"
    INFORMATIONAL = "informational"
    DEBUG = "debug"


class Alert:
    """What a rule raises: a priority, a message, fields and tags."""

    __slots__ = ("priority", "message", "fields", "tags")

    def __init__(self, priority: Priority, message: str, fields=None, tags=None):
        self.priority = priority
        self.message = str(message)
        self.fields = list(fields or [])
        self.tags = list(tags or [])

    def field(self, key: str, value) -> "Alert":
        """Adds an output field (kept in order); returns the alert."""
        self.fields.append((str(key), str(value)))
        return self

    def tag(self, tag: str) -> "Alert":
        self.tags.append(str(tag))
        return self

    def __repr__(self) -> str:
        return f"Alert({self.priority.name}, {self.message!r}, fields={self.fields})"


def _make(priority: Priority):
    return staticmethod(lambda message: Alert(priority, message))


for _p in Priority:
    setattr(Alert, _p.name.lower(), _make(_p))


def log(level: str, message: str) -> None:
    """Writes to the daemon's log (``trace`` ... ``error``); natively, to stderr."""
    _logger(level, str(message))


def _stderr_log(level: str, message: str) -> None:
    print(f"[{level}] {message}", file=sys.stderr)


_logger: Callable[[str, str], None] = _stderr_log


_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?")
MAX_TAGS, MAX_NAME = 32, 128


def check_metadata(id: str, version: str, tags, subscribe) -> None:
    """What the daemon checks when it loads a rule, checked when the rule is
    declared (so a rule's own tests say it, not the daemon's log)."""
    if not isinstance(id, str) or not _ID.fullmatch(id):
        raise ValueError(f"rule id {id!r} must be 1-64 characters of lowercase letters, digits and '-' "
                         "(not first or last)")
    if not subscribe:
        raise ValueError(f"rule {id} subscribes to no event kind")
    if len(tags) > MAX_TAGS or any(len(t.encode()) > MAX_NAME for t in tags) or len(version.encode()) > MAX_NAME:
        raise ValueError(f"rule {id}: at most {MAX_TAGS} tags of {MAX_NAME} bytes, and a version of {MAX_NAME}")


def _events(batch: bytes):
    """The batch's events; none, logged, for a batch the decoder refuses."""
    try:
        return Batch(batch)
    except BadBatch as e:
        log("error", f"bad batch from the host: {e}")
        return ()


class Rule:
    """A rule as ``@rule`` declared it."""

    def __init__(self, func, id, version, description, subscribe, containers_only, tags, config, state):
        check_metadata(id, version, tuple(tags), tuple(subscribe))
        self.func = func
        self.id = id
        self.version = version
        self.description = description
        self.subscribe = tuple(subscribe)
        self.containers_only = containers_only
        self.tags = tuple(tags)
        self.config_defaults = dict(config or {})
        self.state_factory = state
        params = inspect.signature(func).parameters
        unknown = set(params) - {"event", "state", "config"}
        if "event" not in params or unknown:
            raise TypeError(f"rule {id}: its parameters are `event`, and optionally `state` and `config`; got {list(params)}")
        if "state" in params and state is None:
            raise TypeError(f"rule {id}: takes `state`: give @rule(state=<factory>), e.g. state=dict")
        self.wants_state, self.wants_config = "state" in params, "config" in params
        self.config = dict(self.config_defaults)
        self.state = state() if state else None

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    # The detector interface.

    def metadata(self) -> str:
        return json.dumps({
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "subscriptions": [k.wit_name for k in self.subscribe],
            "containers-only": self.containers_only,
            "tags": list(self.tags),
        })

    def init(self, config: str) -> None:
        """Takes the rule's config (JSON); an unknown key or bad JSON is an error."""
        given = json.loads(config) if config.strip() else {}
        if not isinstance(given, dict):
            raise ValueError(f"invalid rule config: expected a table, got {type(given).__name__}")
        unknown = set(given) - set(self.config_defaults)
        if unknown:
            raise ValueError(f"invalid rule config: unknown key(s) {sorted(unknown)}; known: {sorted(self.config_defaults)}")
        self.config = {**self.config_defaults, **given}
        self.warm_up()
        self.state = self.state_factory() if self.state_factory else None

    def warm_up(self) -> None:
        """Runs the rule once over a made-up exec, its alerts dropped and its
        state thrown away: a component's first call maps in the interpreter's
        memory and fills its caches, which can take longer than a call's
        deadline (10 ms). ``init`` has a deadline of its own (500 ms) and runs
        off the daemon's dispatching thread."""
        sample = {"kind": "process-exec", "process": {"pid": 1, "tgid": 1, "comm": "true", "exe": "/bin/true",
                                                      "argv": ["true"], "cwd": "/"}}
        if EventKind.PROCESS_EXEC not in self.subscribe:
            sample = {"kind": self.subscribe[0].wit_name}
        self.state = self.state_factory() if self.state_factory else None
        for event in Batch(encode_batch([sample, sample])):
            try:
                self.handle(event)
            except Exception:
                pass  # a made-up event may not be what the rule expects

    def handle(self, event: Event) -> list:
        kwargs = {"event": event}
        if self.wants_state:
            kwargs["state"] = self.state
        if self.wants_config:
            kwargs["config"] = self.config
        out = self.func(**kwargs)
        if out is None:
            return []
        if isinstance(out, Alert):
            return [out]
        return list(out)

    def event_alerts(self, event: Event) -> list:
        """The rule's alerts for one event of a batch: none for a kind it
        does not subscribe to or, with ``containers_only``, for an event
        outside containers (``events-lost`` always comes); an exception
        costs that event only, and is logged."""
        kind = event.kind
        if kind is not EventKind.EVENTS_LOST and (
            kind not in self.subscribe or (self.containers_only and not event.in_container)
        ):
            return []
        try:
            return self.handle(event)
        except Exception as e:  # one event's error does not cost the batch
            log("error", f"rule {self.id} failed on event {event.id}: {type(e).__name__}: {e}")
            return []

    def alerts(self, batch: bytes) -> list:
        """``(event index, alert)`` for each alert the batch raises."""
        return [(i, a) for i, event in enumerate(_events(batch)) for a in self.event_alerts(event)]

    def alert_json(self, index: int, a: Alert) -> dict:
        """The ``alert`` record, for event ``index`` of the batch."""
        return {
            "rule": self.id,
            "priority": a.priority.value,
            "message": a.message,
            "tags": list(self.tags) + a.tags,
            "fields": [{"key": k, "value": v} for k, v in a.fields],
            "event-index": index,
        }

    def on_batch(self, batch: bytes) -> str:
        found = self.alerts(batch)
        return json.dumps([self.alert_json(i, a) for i, a in found]) if found else ""

    def snapshot(self) -> Optional[bytes]:
        if self.state_factory is None:
            return None
        return json.dumps(self.state).encode()

    def restore(self, state: bytes) -> None:
        try:
            self.state = json.loads(state)
        except ValueError as e:
            raise ValueError(f"cannot restore state: {e}") from e


RULES: list = []


def rule(
    *,
    id: str,
    subscribe: Iterable[EventKind] = (EventKind.PROCESS_EXEC,),
    containers_only: bool = False,
    tags: Iterable[str] = (),
    version: str = "0.1.0",
    description: Optional[str] = None,
    config: Optional[dict] = None,
    state: Optional[Callable[[], object]] = None,
):
    """Declares a rule: a function of ``event`` (and optionally ``state``, a
    JSON-serializable object made by ``state()`` and handed to the next
    version on a hot reload, and ``config``, ``config``'s defaults updated
    from ``[rules.settings.<id>] config``) returning an :class:`Alert`, a
    list of them, or ``None``."""

    def wrap(func) -> Rule:
        desc = description if description is not None else (inspect.getdoc(func) or id).split("\n")[0]
        r = Rule(func, id, version, desc, subscribe, containers_only, tags, config, state)
        RULES.append(r)
        return r

    return wrap


class Pack:
    """Several rules in one component: one CPython instance for all of
    them (a Python rule's memory is mostly its interpreter). The daemon sees
    one rule, ``id``, whose alerts carry each rule's own id; its config is a
    table per rule id; its state, every stateful rule's."""

    def __init__(self, id: str, version: str, description: str, rules: list):
        check_metadata(id, version, (), tuple(k for r in rules for k in r.subscribe))
        self.id, self.version, self.description, self.rules = id, version, description, rules

    def metadata(self) -> str:
        kinds = sorted({k for r in self.rules for k in r.subscribe})
        return json.dumps({
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "subscriptions": [k.wit_name for k in kinds],
            "containers-only": all(r.containers_only for r in self.rules),
            "tags": [],
        })

    def init(self, config: str) -> None:
        given = json.loads(config) if config.strip() else {}
        if not isinstance(given, dict):
            raise ValueError("invalid rule config: expected a table of rule ids")
        unknown = set(given) - {r.id for r in self.rules}
        if unknown:
            raise ValueError(f"invalid rule config: no rule {sorted(unknown)} in pack {self.id}")
        for r in self.rules:
            r.init(json.dumps(given.get(r.id, {})))

    def on_batch(self, batch: bytes) -> str:
        out = [
            r.alert_json(i, a) for i, event in enumerate(_events(batch)) for r in self.rules for a in r.event_alerts(event)
        ]
        return json.dumps(out) if out else ""

    def snapshot(self) -> Optional[bytes]:
        states = {r.id: r.state for r in self.rules if r.state_factory is not None}
        return json.dumps(states).encode() if states else None

    def restore(self, state: bytes) -> None:
        try:
            states = json.loads(state)
        except ValueError as e:
            raise ValueError(f"cannot restore state: {e}") from e
        for r in self.rules:
            if r.id in states and r.state_factory is not None:
                r.state = states[r.id]


PACK: list = []


def pack(*, id: str, version: str = "0.1.0", description: str = "") -> None:
    """Declares that this module's rules run as one component, ``id``."""
    PACK[:] = [(id, version, description or f"rule pack {id}")]


def component_rule():
    """What the component exports: the module's one rule, or its pack."""
    if PACK:
        id, version, description = PACK[0]
        return Pack(id, version, description, list(RULES))
    if len(RULES) != 1:
        raise RuntimeError(f"a component holds one rule, or a pack (vigil_rules.pack); this one declares {len(RULES)}")
    return RULES[0]
