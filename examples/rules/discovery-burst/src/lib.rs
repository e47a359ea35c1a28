//! Vigil rule `discovery-burst`: one container running many distinct
//! discovery commands (`whoami`, `id`, `uname`, `ip addr`, `ps`,
//! `cat /etc/passwd`...) within a short sliding window, the first thing a
//! person does on a machine they have just got into (MITRE ATT&CK T1082,
//! T1033, T1016). It alerts once when the count of distinct commands reaches
//! the threshold, then stays quiet for that container for a window.
//!
//! Config: `{"threshold": 5, "window_secs": 60}` (both optional). At most
//! 4096 containers are tracked; the least recently active is dropped first.
//! On a hot reload the tracked containers carry over and the new config
//! applies.
//!
//! An example of a stateful Rust rule with config. Vigil's bundled rules
//! detect the same as a Sigma correlation rule
//! (`rules/declarative/rules/65-discovery-burst.yaml`), run by the rule-file
//! interpreter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_sdk::prelude::*;

const MAX_CONTAINERS: usize = 4096;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Commands that are discovery whatever their arguments.
const DISCOVERY: &[&str] = &[
    "whoami", "id", "uname", "hostname", "ifconfig", "netstat", "ss", "ps", "printenv", "df", "lsblk", "last", "w",
    "who", "getent", "nproc", "lscpu", "arp", "route",
];
/// Files whose `cat` is discovery.
const FILES: &[(&str, &str)] = &[
    ("/etc/passwd", "cat /etc/passwd"),
    ("/etc/os-release", "cat /etc/os-release"),
    ("/proc/version", "cat /proc/version"),
];

/// The rule's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Distinct discovery commands within the window that make a burst.
    pub threshold: usize,
    /// The sliding window, in seconds.
    pub window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { threshold: 5, window_secs: 60 }
    }
}

/// The discovery commands each container ran recently.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Bursts {
    config: Config,
    containers: BTreeMap<String, Burst>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Burst {
    /// Each distinct discovery command within the window, with when it last ran.
    seen: Vec<(String, u64)>,
    /// When the container last ran a discovery command.
    last_ns: u64,
    /// When the container last alerted.
    alerted_ns: Option<u64>,
}

impl State for Bursts {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = vigil_sdk::parse_config(config)?;
        if config.threshold == 0 || config.window_secs == 0 {
            return Err("discovery-burst: threshold and window_secs must be at least 1".into());
        }
        Ok(Bursts { config, ..Bursts::default() })
    }

    /// Keeps the config just read; takes the tracked containers from the version replaced.
    fn restore(&mut self, previous: Self) {
        *self = Bursts { config: self.config, ..previous };
    }
}

impl Bursts {
    /// Makes room for one more container: drops the idle ones, then the least recently active.
    fn make_room(&mut self, now: u64, window: u64) {
        if self.containers.len() < MAX_CONTAINERS {
            return;
        }
        self.containers.retain(|_, b| now.saturating_sub(b.last_ns) < window);
        if self.containers.len() >= MAX_CONTAINERS {
            let oldest = self.containers.iter().min_by_key(|(_, b)| b.last_ns).map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.containers.remove(&id);
            }
        }
    }
}

/// A container ran many distinct discovery commands within a short time.
#[rule(
    id = "discovery-burst",
    subscribe = [ProcessExec, ContainerDelete],
    containers_only = true,
    tags = ["container", "mitre_discovery", "T1082", "T1033", "T1016"]
)]
pub fn detect(state: &mut Bursts, event: &Event) -> Option<Alert> {
    let container = event.container()?;
    if event.is(EventKind::ContainerDelete) {
        state.containers.remove(container.id());
        return None;
    }
    let process = event.process()?;
    let command = discovery(&process)?;
    let Config { threshold, window_secs } = state.config;
    let (now, window) = (event.time_ns(), window_secs.saturating_mul(NS_PER_SEC));
    if !state.containers.contains_key(container.id()) {
        state.make_room(now, window);
        state.containers.insert(container.id().to_string(), Burst::default());
    }
    let burst = state.containers.get_mut(container.id())?;
    burst.seen.retain(|(_, t)| now.saturating_sub(*t) < window);
    match burst.seen.iter_mut().find(|(c, _)| c == command) {
        Some((_, t)) => *t = now.max(*t),
        None => burst.seen.push((command.to_string(), now)),
    }
    burst.last_ns = now.max(burst.last_ns);
    let suppressed = burst.alerted_ns.is_some_and(|t| now.saturating_sub(t) < window);
    if burst.seen.len() < threshold || suppressed {
        return None;
    }
    burst.alerted_ns = Some(now);
    let commands = burst.seen.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(",");
    Some(
        Alert::notice(format!(
            "{} distinct discovery commands within {window_secs}s in container (commands={commands} command={} container={} image={})",
            burst.seen.len(),
            process.cmdline(),
            container.name(),
            container.image(),
        ))
        .field("commands", commands),
    )
}

/// The discovery command `process` runs, named for counting: `uname`, `ip addr`, `cat /etc/passwd`...
fn discovery(process: &Process) -> Option<&'static str> {
    let name = process.program();
    if let Some(command) = DISCOVERY.iter().copied().find(|d| *d == name) {
        return Some(command);
    }
    match name {
        // With arguments, env runs a program and mount mounts.
        "env" if process.args().len() == 0 => Some("env"),
        "mount" if process.args().len() == 0 => Some("mount"),
        "ip" => match process.args().find(|a| !a.starts_with('-'))? {
            "addr" | "address" | "a" => Some("ip addr"),
            "route" | "r" => Some("ip route"),
            "link" | "l" => Some("ip link"),
            _ => None,
        },
        "cat" => FILES.iter().find(|(file, _)| process.argv_contains(file)).map(|(_, command)| *command),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::testing::{EventBuilder, container_event, exec, run_stateful};

    /// `argv` run in `container` at `secs` seconds.
    fn cmd(container: &str, argv: &[&str], secs: u64) -> EventBuilder {
        exec(&format!("/usr/bin/{}", argv[0]), argv.iter().copied())
            .container(container, "nginx:1.25")
            .time_ns(1_700_000_000 * NS_PER_SEC + secs * NS_PER_SEC)
    }

    fn recon(container: &str, start: u64) -> Vec<EventBuilder> {
        [&["whoami"][..], &["id", "-u"], &["uname", "-a"], &["ip", "-4", "a"], &["cat", "/etc/passwd"]]
            .iter()
            .enumerate()
            .map(|(i, argv)| cmd(container, argv, start + i as u64))
            .collect()
    }

    #[test]
    fn five_distinct_commands_alert_once() {
        let mut state = Bursts::default();
        let mut events = recon("web", 0);
        events.push(cmd("web", &["hostname"], 6));
        events.push(cmd("web", &["ps", "aux"], 7));
        let alerts = run_stateful(&mut state, detect, events);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].priority, Priority::Notice);
        assert_eq!(
            alerts[0].message,
            "5 distinct discovery commands within 60s in container (commands=whoami,id,uname,ip addr,cat /etc/passwd \
             command=cat /etc/passwd container=web image=nginx:1.25)"
        );
    }

    #[test]
    fn alerts_again_only_after_a_quiet_window() {
        let mut state = Bursts::default();
        let mut events = recon("web", 0);
        events.extend(recon("web", 30));
        events.extend(recon("web", 70));
        assert_eq!(run_stateful(&mut state, detect, events).len(), 2);
    }

    #[test]
    fn repeats_slow_bursts_and_non_discovery_do_not_alert() {
        let mut state = Bursts::default();
        let mut events: Vec<_> = (0..5).map(|i| cmd("a", &["whoami"], i)).collect();
        events.extend(recon("b", 0).into_iter().take(4));
        events.push(cmd("b", &["hostname"], 70));
        events.extend([
            cmd("c", &["env", "python3", "app.py"], 0),
            cmd("c", &["mount", "-t", "tmpfs", "x", "/mnt"], 1),
            cmd("c", &["ip", "netns"], 2),
            cmd("c", &["cat", "/etc/hosts"], 3),
            cmd("c", &["ls", "/"], 4),
            cmd("c", &["whoami"], 5),
        ]);
        let host: Vec<_> = ["whoami", "id", "uname", "hostname", "ps"]
            .iter()
            .map(|c| exec(&format!("/usr/bin/{c}"), [*c]).time_ns(1))
            .collect();
        let alerts = run_stateful(&mut state, detect, events.into_iter().chain(host));
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    #[test]
    fn containers_are_counted_separately() {
        let mut state = Bursts::default();
        let (a, b) = (recon("a", 0), recon("b", 0));
        let mut events: Vec<_> =
            a.iter().take(4).zip(b.iter().take(4)).flat_map(|(x, y)| [x.clone(), y.clone()]).collect();
        events.push(a[4].clone());
        let alerts = run_stateful(&mut state, detect, events);
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].message.contains("container=a "), "{}", alerts[0].message);
    }

    #[test]
    fn config_is_honoured_and_checked() {
        let mut state = Bursts::init(r#"{"threshold":2}"#).unwrap();
        assert_eq!(state.config, Config { threshold: 2, window_secs: 60 });
        let alerts = run_stateful(&mut state, detect, [cmd("web", &["id"], 0), cmd("web", &["uname"], 1)]);
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].message.starts_with("2 distinct discovery commands within 60s"));

        let mut state = Bursts::init(r#"{"window_secs":5}"#).unwrap();
        let slow: Vec<_> =
            recon("web", 0).into_iter().enumerate().map(|(i, e)| e.time_ns(i as u64 * 2 * NS_PER_SEC)).collect();
        assert!(run_stateful(&mut state, detect, slow).is_empty());

        assert_eq!(Bursts::init("{}").unwrap().config, Config::default());
        assert!(Bursts::init(r#"{"threshold":0}"#).is_err());
        assert!(Bursts::init(r#"{"treshold":3}"#).is_err());
    }

    #[test]
    fn state_survives_a_json_round_trip() {
        let mut state = Bursts::init(r#"{"threshold":4}"#).unwrap();
        let events = recon("web", 0);
        assert!(run_stateful(&mut state, detect, events[..3].to_vec()).is_empty());
        let json = serde_json::to_string(&state).unwrap();
        let mut restored: Bursts = serde_json::from_str(&json).unwrap();
        assert_eq!(restored.config.threshold, 4);
        assert_eq!(run_stateful(&mut restored, detect, events[3..].to_vec()).len(), 1);
        assert!(serde_json::from_str::<Bursts>("{}").is_ok());
    }

    #[test]
    fn a_hot_reload_keeps_the_new_config_and_the_tracked_containers() {
        let mut old = Bursts::default();
        assert!(run_stateful(&mut old, detect, recon("web", 0).into_iter().take(1)).is_empty());
        let snapshot: Bursts = serde_json::from_str(&serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(snapshot.config.threshold, 5);
        let tracked: Vec<String> = old.containers.keys().cloned().collect();
        assert_eq!(tracked.len(), 1);

        let mut state = Bursts::init(r#"{"threshold":2}"#).unwrap();
        vigil_sdk::State::restore(&mut state, snapshot);
        assert_eq!(state.config, Config { threshold: 2, window_secs: 60 });
        assert_eq!(state.containers.keys().cloned().collect::<Vec<_>>(), tracked);
        // The carried-over `whoami` and one more command make 2.
        let alerts = run_stateful(&mut state, detect, [cmd("web", &["id"], 1)]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(alerts[0].message.starts_with("2 distinct discovery commands"), "{}", alerts[0].message);
    }

    #[test]
    fn memory_is_capped_and_deleted_containers_are_forgotten() {
        let mut state = Bursts::default();
        let events = (0..MAX_CONTAINERS as u64 + 10).map(|i| cmd(&format!("c{i}"), &["id"], i / 1000));
        run_stateful(&mut state, detect, events);
        assert_eq!(state.containers.len(), MAX_CONTAINERS);

        let mut state = Bursts::default();
        run_stateful(&mut state, detect, recon("web", 0).into_iter().take(2));
        assert_eq!(state.containers.len(), 1);
        run_stateful(&mut state, detect, [container_event(EventKind::ContainerDelete, "web", "nginx:1.25")]);
        assert!(state.containers.is_empty());
    }
}
