"""The decorator and the detector interface, natively."""

import json

import pytest

from vigil_rules import Alert, EventKind, rule
from vigil_rules.encode import encode_batch
from vigil_rules.testing import event, exec, run


def test_metadata_config_state_and_alert_json():
    @rule(id="counter", subscribe=[EventKind.PROCESS_EXEC], containers_only=True, tags=["t1"],
          config={"every": 2}, state=lambda: {"seen": 0})
    def counter(event, state, config):
        """Counts execs in containers."""
        state["seen"] += 1
        if state["seen"] % config["every"] == 0:
            return [Alert.warning(f"{state['seen']} execs").field("n", state["seen"]).tag("count")]

    meta = json.loads(counter.metadata())
    assert meta == {"id": "counter", "version": "0.1.0", "description": "Counts execs in containers.",
                    "subscriptions": ["process-exec"], "containers-only": True, "tags": ["t1"]}
    counter.init('{"every": 1}')
    batch = encode_batch([exec("/bin/a", ["a"]), exec("/bin/a", ["a"]).container("web", "img")])
    out = json.loads(counter.on_batch(batch))
    assert out == [{"rule": "counter", "priority": "warning", "message": "1 execs", "tags": ["t1", "count"],
                    "fields": [{"key": "n", "value": "1"}], "event-index": 1}], "the host exec is not in scope"
    saved = counter.snapshot()
    counter.init("{}")
    counter.restore(saved)
    assert counter.state == {"seen": 1}, "state handed over"
    with pytest.raises(ValueError, match="unknown key"):
        counter.init('{"evry": 3}')
    with pytest.raises(ValueError):
        counter.restore(b"not json")


def test_an_exception_costs_its_event_only():
    @rule(id="fragile")
    def fragile(event):
        if event.process.argv[1] == "boom":
            raise KeyError("x")
        return Alert.notice("ok")

    assert len(run(fragile, [exec("/a", ["a", "boom"]), exec("/a", ["a", "fine"])])) == 1


def test_bad_signatures_are_refused():
    with pytest.raises(TypeError):
        rule(id="x")(lambda evt: None)
    with pytest.raises(TypeError, match="state"):
        rule(id="y")(lambda event, state: None)


def test_only_subscribed_kinds_reach_the_rule():
    @rule(id="exits", subscribe=[EventKind.PROCESS_EXIT])
    def exits(event):
        return Alert.informational(f"exit {event.exit_code}")

    alerts = run(exits, [exec("/a", ["a"]), event(EventKind.PROCESS_EXIT, exit_code=3, process={"pid": 1})])
    assert [a.message for a in alerts] == ["exit 3"]


def test_a_pack_runs_several_rules_as_one():
    from vigil_rules import _rule
    from vigil_rules._rule import Pack

    @rule(id="pack-execs", subscribe=[EventKind.PROCESS_EXEC], state=lambda: {"n": 0})
    def execs(event, state):
        state["n"] += 1
        return Alert.notice(f"exec {state['n']}")

    @rule(id="pack-exits", subscribe=[EventKind.PROCESS_EXIT], containers_only=True, config={"code": 1})
    def exits(event, config):
        return Alert.warning("bad exit") if event.exit_code == config["code"] else None

    p = Pack("my-pack", "1.2.3", "two rules", [execs, exits])
    meta = json.loads(p.metadata())
    assert (meta["id"], meta["subscriptions"], meta["containers-only"]) == (
        "my-pack", ["process-exec", "process-exit"], False)
    p.init('{"pack-exits": {"code": 3}}')
    batch = encode_batch([
        exec("/a", ["a"]),
        event(EventKind.PROCESS_EXIT, exit_code=3, process={"pid": 1}),  # on the host: not for pack-exits
        event(EventKind.PROCESS_EXIT, exit_code=3, process={"pid": 1}, container={"id": "c"}),
    ])
    out = json.loads(p.on_batch(batch))
    assert [(a["rule"], a["message"], a["event-index"]) for a in out] == [
        ("pack-execs", "exec 1", 0), ("pack-exits", "bad exit", 2)]
    saved = p.snapshot()
    p.init("{}")
    p.restore(saved)
    assert execs.state == {"n": 1}
    with pytest.raises(ValueError, match="no rule"):
        p.init('{"nope": {}}')
    _rule.RULES.clear()


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "-lead", "trail-", "x" * 65, "ünï"])
def test_ids_the_daemon_would_refuse_are_refused_when_declared(bad):
    with pytest.raises(ValueError, match="lowercase letters"):
        rule(id=bad)(lambda event: None)


def test_no_subscription_or_oversized_tags_are_refused():
    with pytest.raises(ValueError, match="no event kind"):
        rule(id="none", subscribe=[])(lambda event: None)
    with pytest.raises(ValueError, match="tags"):
        rule(id="tags", tags=["t"] * 33)(lambda event: None)
