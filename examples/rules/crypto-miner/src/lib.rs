//! Vigil rule `crypto-miner`: a cryptocurrency miner started, on the host
//! or in a container (MITRE ATT&CK T1496), recognised by a known miner
//! executable name, a `stratum` pool URL, a well-known mining pool host, or
//! XMRig's own options (`--donate-level`; `--cpu-priority` with a pool given
//! by `-o`/`--url`), so renamed binaries are caught by their arguments.

use vigil_sdk::prelude::*;

const MINERS: &[&str] = &[
    "xmrig",
    "xmr-stak",
    "minerd",
    "cpuminer",
    "cgminer",
    "bfgminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "lolminer",
    "phoenixminer",
    "ccminer",
    "nanominer",
];
const POOLS: &[&str] = &[
    "stratum+tcp://",
    "stratum+ssl://",
    "stratum2+tcp://",
    "pool.minexmr",
    "nanopool.org",
    "supportxmr.com",
    "2miners.com",
    "moneroocean.stream",
    "f2pool.com",
    "ethermine.org",
];

/// A cryptocurrency miner was started.
#[rule(
    id = "crypto-miner",
    subscribe = [ProcessExec],
    tags = ["mitre_impact", "T1496"]
)]
pub fn detect(event: &Event) -> Option<Alert> {
    let process = event.process()?;
    let name = process.exe_basename();
    let known_miner = MINERS.iter().any(|m| m.eq_ignore_ascii_case(name));
    let pool = process.args().find(|a| POOLS.iter().any(|p| a.contains(p)));
    if !(known_miner || pool.is_some() || xmrig_options(&process)) {
        return None;
    }
    let place = match event.container() {
        Some(c) => format!("container={} image={}", c.name(), c.image()),
        None => "container=host".to_string(),
    };
    let alert = Alert::critical(format!("Crypto miner started (command={} {place})", process.cmdline()));
    Some(match pool {
        Some(pool) => alert.field("pool", pool),
        None => alert,
    })
}

/// XMRig's `--donate-level`, or its `--cpu-priority` with a pool (`-o`, `--url`).
fn xmrig_options(process: &Process) -> bool {
    let has = |name: &str| {
        process.args().any(|a| a.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('=')))
    };
    has("--donate-level") || (has("--cpu-priority") && (has("-o") || has("--url")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{exec, run};

    #[test]
    fn known_miners_alert_by_name() {
        let alerts = run(
            detect,
            [exec("/tmp/xmrig", ["xmrig"]), exec("/opt/PhoenixMiner", ["./PhoenixMiner"]).container("gpu", "cuda:12")],
        );
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].priority, Priority::Critical);
        assert_eq!(alerts[0].message, "Crypto miner started (command=xmrig container=host)");
        assert_eq!(alerts[1].message, "Crypto miner started (command=./PhoenixMiner container=gpu image=cuda:12)");
    }

    #[test]
    fn renamed_miners_alert_by_arguments() {
        let alerts = run(
            detect,
            [
                exec("/tmp/.x/kworker", ["kworker", "-o", "stratum+tcp://pool.example:3333", "-u", "wallet"]),
                exec("/tmp/httpd", ["httpd", "--url=gulf.moneroocean.stream:10128"]),
                exec("/tmp/sshd", ["sshd", "--donate-level", "1", "-c", "c.json"]),
                exec("/tmp/a", ["a", "--cpu-priority=5", "-o", "10.0.0.9:80"]),
            ],
        );
        assert_eq!(alerts.len(), 4, "{alerts:?}");
        assert_eq!(alerts[0].fields, [("pool".to_string(), "stratum+tcp://pool.example:3333".to_string())]);
        assert_eq!(alerts[1].fields[0].1, "--url=gulf.moneroocean.stream:10128");
        assert!(alerts[2].fields.is_empty());
    }

    #[test]
    fn ordinary_processes_do_not_alert() {
        let alerts = run(
            detect,
            [
                exec("/usr/bin/nginx", ["nginx", "-g", "daemon off;"]),
                exec("/usr/bin/curl", ["curl", "-o", "out", "https://example.com/mining-report.pdf"]),
                exec("/usr/bin/nice", ["nice", "--cpu-priority", "5", "make"]),
                exec("/usr/bin/minerva", ["minerva"]),
            ],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
