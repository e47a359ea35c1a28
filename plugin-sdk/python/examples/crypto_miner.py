"""A cryptocurrency miner started, on the host or in a container (MITRE
ATT&CK T1496): a known miner executable name, a stratum pool URL, a
well-known mining pool host, or XMRig's own options. The Python twin of
examples/rules/crypto-miner (Rust): the same alerts on the same events."""

from vigil_rules import Alert, EventKind, rule

MINERS = {
    "xmrig", "xmr-stak", "minerd", "cpuminer", "cgminer", "bfgminer", "ethminer", "nbminer", "t-rex",
    "lolminer", "phoenixminer", "ccminer", "nanominer",
}
POOLS = (
    "stratum+tcp://", "stratum+ssl://", "stratum2+tcp://", "pool.minexmr", "nanopool.org", "supportxmr.com",
    "2miners.com", "moneroocean.stream", "f2pool.com", "ethermine.org",
)


def _has_option(args, name):
    return any(a == name or a.startswith(name + "=") for a in args)


@rule(id="crypto-miner-py", subscribe=[EventKind.PROCESS_EXEC], tags=["mitre_impact", "T1496"])
def crypto_miner(event):
    """A cryptocurrency miner was started."""
    process = event.process
    if process is None:
        return None
    args = process.args
    known_miner = process.exe_basename.lower() in MINERS
    pool = next((a for a in args if any(p in a for p in POOLS)), None)
    xmrig = _has_option(args, "--donate-level") or (
        _has_option(args, "--cpu-priority") and (_has_option(args, "-o") or _has_option(args, "--url"))
    )
    if not (known_miner or pool or xmrig):
        return None
    c = event.container
    place = f"container={c.name} image={c.image}" if c else "container=host"
    alert = Alert.critical(f"Crypto miner started (command={process.cmdline} {place})")
    return alert.field("pool", pool) if pool else alert
