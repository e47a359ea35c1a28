//! A rule declared with `config = T`, run through `testing::run` as the
//! daemon would run it: only the kinds it subscribes to, only events in
//! containers (`containers_only`), its config parsed by `init`.

use vigil_sdk::prelude::*;
use vigil_sdk::testing::{event, exec, run, run_configured};

/// Operators' settings for the rule.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Settings {
    /// Programs allowed to run.
    allowed: Vec<String>,
}

/// A program ran that the operators did not allow.
#[rule(subscribe = [ProcessExec], containers_only = true, config = Settings)]
fn unexpected_program(settings: &Settings, event: &Event) -> Option<Alert> {
    let program = event.process()?.program();
    (!settings.allowed.iter().any(|a| a == program)).then(|| Alert::notice(format!("{program} ran")))
}

fn events() -> Vec<vigil_sdk::testing::Event> {
    vec![
        exec("/usr/bin/curl", ["curl"]).container("web", "nginx").into(),
        exec("/usr/bin/curl", ["curl"]).into(), // on the host
        event(EventKind::ProcessExit).container("web", "nginx").into(), // not subscribed
        exec("/bin/busybox", ["wget"]).container("web", "nginx").into(),
    ]
}

#[test]
fn the_declared_rule_sees_what_the_daemon_would_send_it() {
    let alerts = run(UnexpectedProgram, events());
    let messages: Vec<&str> = alerts.iter().map(|a| a.message.as_str()).collect();
    assert_eq!(messages, ["curl ran", "wget ran"]);
}

#[test]
fn its_config_comes_from_init() {
    let alerts = run_configured(UnexpectedProgram, r#"{"allowed": ["curl"]}"#, events());
    let messages: Vec<&str> = alerts.iter().map(|a| a.message.as_str()).collect();
    assert_eq!(messages, ["wget ran"]);
}

#[test]
#[should_panic(expected = "init refused its config")]
fn a_config_the_rule_cannot_parse_is_refused() {
    run_configured(UnexpectedProgram, r#"{"allowed": 3}"#, events());
}

#[test]
fn the_function_alone_is_called_for_every_event() {
    let settings = Settings::default();
    let alerts = run(|e: &Event| unexpected_program(&settings, e), events());
    // Also the host's curl: the function is not told the rule's scope.
    assert_eq!(alerts.len(), 3);
}

/// Stateless, without config.
#[rule(subscribe = [ProcessExec])]
fn any_exec(event: &Event) -> Option<Alert> {
    event.process().map(|p| Alert::notice(format!("{} ran", p.program())))
}

/// Stateless and configured rules hand nothing over on hot reload: they
/// snapshot nothing, and a restore (a host would not call it) takes any
/// bytes without parsing them, so their components carry no JSON parser.
#[test]
fn stateless_rules_snapshot_nothing_and_restore_anything() {
    use vigil_sdk::__private::{restore, snapshot};
    assert_eq!(snapshot::<AnyExec>(), None);
    assert_eq!(restore::<AnyExec>(b"not json".to_vec()), Ok(()));
    assert_eq!(snapshot::<UnexpectedProgram>(), None);
    assert_eq!(restore::<UnexpectedProgram>(b"{".to_vec()), Ok(()));
}
