//! A rule scoped to containers (`containers_only = true`) is called only for
//! events that carry a container; a rule without the scope, in the same run,
//! gets every event of its kinds. (That `events-lost` still reaches a scoped
//! rule is the dispatcher's unit test: no bundled rule is scoped and
//! subscribes to it.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vigil_engine::config::Config;
use vigil_engine::event::{Container, Event, EventKind, Lost, Runtime};

use crate::support::*;

#[test]
fn a_rule_scoped_to_containers_is_not_called_for_host_processes() {
    const EXECS: usize = 400;
    let rules = rule_dir(&["shell-in-container", "crypto-miner"]);
    let cache = tempfile::tempdir().unwrap();
    let web = Arc::new(Container {
        id: "c0ffee".repeat(10) + "c0ff",
        name: "web".into(),
        image: "nginx:1.25".into(),
        runtime: Runtime::Docker,
        ..Default::default()
    });
    // Shells everywhere: the scoped rule would alert on a host shell only
    // if it saw one and forgot its own check; what it is called with is
    // counted by the host.
    let mut events: Vec<Event> = (0..EXECS)
        .map(|i| {
            let mut e = exec("/bin/sh", &["sh", "-c", "id"]);
            if i % 4 == 0 {
                e.container = Some(web.clone());
            }
            e
        })
        .collect();
    events.push(Event { lost: Some(Lost { count: 3, reason: "test".into() }), ..Event::new(EventKind::EventsLost) });
    let source = PacedSource { events, per_sec: 50_000, batch: 64, hooks: vec![] };
    let config = Config { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
    let (summary, output) = run_pipeline(config, rules.path(), false, source);

    let stats = |id: &str| summary.rules.iter().find(|(r, _)| r == id).unwrap().1.clone();
    let (scoped, every) = (stats("shell-in-container"), stats("crypto-miner"));
    assert_eq!(scoped.events_in.load(Ordering::Relaxed), (EXECS / 4) as u64, "only the container's execs");
    assert_eq!(every.events_in.load(Ordering::Relaxed), EXECS as u64, "every exec");
    assert_eq!(scoped.faults() + every.faults(), 0);
    let shells = output.alerts().iter().filter(|a| a.rule == "shell-in-container").count();
    assert_eq!(shells, EXECS / 4, "one alert per shell in the container, none for the host's");
}
