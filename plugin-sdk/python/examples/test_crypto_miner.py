"""The Python crypto-miner's own tests: natively, over built events and over
the repository's replay fixture."""

from pathlib import Path

from crypto_miner import crypto_miner
from vigil_rules import Priority
from vigil_rules.testing import exec, replay, run

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


def test_known_miners_alert_by_name():
    alerts = run(crypto_miner, [
        exec("/tmp/xmrig", ["xmrig"]),
        exec("/opt/PhoenixMiner", ["./PhoenixMiner"]).container("gpu", "cuda:12"),
    ])
    assert [a.message for a in alerts] == [
        "Crypto miner started (command=xmrig container=host)",
        "Crypto miner started (command=./PhoenixMiner container=gpu image=cuda:12)",
    ]
    assert alerts[0].priority is Priority.CRITICAL


def test_renamed_miners_alert_by_arguments():
    alerts = run(crypto_miner, [
        exec("/tmp/.x/kworker", ["kworker", "-o", "stratum+tcp://pool.example:3333", "-u", "wallet"]),
        exec("/tmp/httpd", ["httpd", "--url=gulf.moneroocean.stream:10128"]),
        exec("/tmp/sshd", ["sshd", "--donate-level", "1", "-c", "c.json"]),
        exec("/tmp/a", ["a", "--cpu-priority=5", "-o", "10.0.0.9:80"]),
    ])
    assert len(alerts) == 4
    assert alerts[0].fields == [("pool", "stratum+tcp://pool.example:3333")]
    assert alerts[2].fields == []


def test_ordinary_processes_do_not_alert():
    assert run(crypto_miner, [
        exec("/usr/bin/nginx", ["nginx", "-g", "daemon off;"]),
        exec("/usr/bin/curl", ["curl", "-o", "out", "https://example.com/mining-report.pdf"]),
        exec("/usr/bin/nice", ["nice", "--cpu-priority", "5", "make"]),
        exec("/usr/bin/minerva", ["minerva"]),
    ]) == []


def test_over_a_replay_file():
    alerts = run(crypto_miner, replay(FIXTURES / "bundled.jsonl"))
    assert alerts, "the bundled fixture has a miner"
    assert all("Crypto miner started" in a.message for a in alerts)
