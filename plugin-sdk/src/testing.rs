//! Test a rule in its own `cargo test`: build events (or load a replay file
//! of JSON lines), run the rule over them as the daemon would (the events
//! are packed into a batch and read through the same views), and look at
//! the alerts.
//!
//! [`run`] takes either the rule as `#[rule]` declares it (the CamelCase
//! type it generates, `ShellInContainer` for `fn shell_in_container`):
//! then, as in the daemon, only events of the kinds it subscribes to reach
//! it, `containers_only` rules see only events in containers, and a rule
//! with `config = T` gets `{}` as its config ([`run_configured`] gives
//! another); or a plain rule function, which is called for every event.
//!
//! ```ignore
//! use vigil_sdk::testing::{exec, run};
//! let alerts = run(ShellInContainer, [exec("/bin/bash", ["bash"]).container("web", "nginx")]);
//! assert_eq!(alerts.len(), 1);
//! ```

use std::sync::Arc;

use vigil_event::packed::{BatchView, encode_batch};
pub use vigil_event::{Ancestor, Container, Event, EventKind, Pod, Process, Runtime};

use crate::__private::Rule;
use crate::{Alert, IntoAlerts, State};

/// What [`run`] can run: a rule `#[rule]` declared (by its generated type),
/// or a plain rule function. `M` only tells the two apart.
pub trait Testable<M> {
    /// The rule's alerts over `events`, with `config` (JSON) as its config.
    fn alerts(&self, config: &str, events: Vec<Event>) -> Vec<Alert>;
}

/// [`Testable`] by the rule's declaration.
pub struct Declared;
/// [`Testable`] by a plain function returning `R`.
pub struct Function<R>(std::marker::PhantomData<R>);

impl<T: Rule> Testable<Declared> for T {
    fn alerts(&self, config: &str, events: Vec<Event>) -> Vec<Alert> {
        let mut state =
            T::State::init(config).unwrap_or_else(|e| panic!("rule {}: init refused its config: {e}", T::ID));
        let mut alerts = Vec::new();
        for_each_packed(&events, |event| {
            let kind = event.kind();
            let subscribed = kind.is_some_and(|k| T::SUBSCRIPTIONS.contains(&k));
            let scoped = !T::CONTAINERS_ONLY || event.container().is_some() || kind == Some(EventKind::EventsLost);
            if subscribed && scoped {
                T::handle(&mut state, event, &mut alerts);
            }
        });
        alerts
    }
}

impl<F, R> Testable<Function<R>> for F
where
    F: Fn(&crate::Event<'_>) -> R,
    R: IntoAlerts,
{
    fn alerts(&self, _config: &str, events: Vec<Event>) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for_each_packed(&events, |event| self(event).push_into(&mut alerts));
        alerts
    }
}

/// Packs `events` into one batch, as the daemon does, and hands each view to `f`.
fn for_each_packed(events: &[Event], mut f: impl FnMut(&crate::Event<'_>)) {
    let mut bytes = Vec::new();
    encode_batch(events, &mut bytes);
    let batch = BatchView::new(&bytes).expect("the SDK's own encoding is valid");
    for event in batch.iter() {
        f(&event);
    }
}

/// Runs a rule over `events`; returns every alert in order. Given the
/// rule's type (`ShellInContainer`), events reach it as in the daemon (its
/// subscriptions, `containers_only`, config `{}`); given a function, every
/// event does.
pub fn run<M, E>(rule: impl Testable<M>, events: impl IntoIterator<Item = E>) -> Vec<Alert>
where
    E: Into<Event>,
{
    rule.alerts("{}", events.into_iter().map(Into::into).collect())
}

/// [`run`] with `config` (JSON, as the daemon passes `[rules.settings.<id>]
/// config`) as the rule's config.
pub fn run_configured<M, E>(rule: impl Testable<M>, config: &str, events: impl IntoIterator<Item = E>) -> Vec<Alert>
where
    E: Into<Event>,
{
    rule.alerts(config, events.into_iter().map(Into::into).collect())
}

/// Runs a stateful rule function over `events`, starting from `state` (which
/// it leaves as the rule left it, for assertions).
pub fn run_stateful<S, R, E>(
    state: &mut S,
    rule: impl Fn(&mut S, &crate::Event<'_>) -> R,
    events: impl IntoIterator<Item = E>,
) -> Vec<Alert>
where
    R: IntoAlerts,
    E: Into<Event>,
{
    let events: Vec<Event> = events.into_iter().map(Into::into).collect();
    let mut alerts = Vec::new();
    for_each_packed(&events, |event| rule(state, event).push_into(&mut alerts));
    alerts
}

/// Loads a replay file of JSON lines (one event per line, `#` comments and
/// blank lines skipped), the format `vigil replay` reads.
pub fn load_jsonl(path: impl AsRef<std::path::Path>) -> Result<Vec<Event>, String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("{\"vigil-replay\"") {
            continue;
        }
        let e: Event = serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        events.push(e);
    }
    Ok(events)
}

/// Builds a test event. Start from [`exec`], [`event`] or [`container_event`].
#[derive(Debug, Clone)]
pub struct EventBuilder(Event);

impl From<EventBuilder> for Event {
    fn from(b: EventBuilder) -> Event {
        b.0
    }
}

/// A process-exec of `exe` with `argv` (argv[0] first), pid 100, ppid 1, uid 0.
pub fn exec<'a>(exe: &str, argv: impl IntoIterator<Item = &'a str>) -> EventBuilder {
    let argv: Vec<String> = argv.into_iter().map(str::to_string).collect();
    let comm: String = crate::basename(exe).chars().take(15).collect();
    EventBuilder(Event {
        process: Some(Process { pid: 100, tgid: 100, ppid: 1, comm, exe: exe.to_string(), argv, ..Process::default() }),
        ..Event::new(EventKind::ProcessExec)
    })
}

/// An event of `kind` with nothing attached.
pub fn event(kind: EventKind) -> EventBuilder {
    EventBuilder(Event::new(kind))
}

/// A container lifecycle event for a Docker container named `name`.
pub fn container_event(kind: EventKind, name: &str, image: &str) -> EventBuilder {
    event(kind).container(name, image)
}

impl EventBuilder {
    fn process_mut(&mut self) -> &mut Process {
        self.0.process.get_or_insert_with(Process::default)
    }
    /// Sets the process's pid and tgid.
    pub fn pid(mut self, pid: u32) -> Self {
        let p = self.process_mut();
        p.pid = pid;
        p.tgid = pid;
        self
    }
    /// Sets the user id.
    pub fn uid(mut self, uid: u32) -> Self {
        self.process_mut().uid = uid;
        self
    }
    /// Sets the working directory.
    pub fn cwd(mut self, cwd: &str) -> Self {
        self.process_mut().cwd = cwd.to_string();
        self
    }
    /// Appends an ancestor (call parent first, then grandparent...).
    pub fn ancestor(mut self, pid: u32, exe: &str) -> Self {
        let comm: String = crate::basename(exe).chars().take(15).collect();
        let p = self.process_mut();
        if p.ancestry.is_empty() {
            p.ppid = pid;
        }
        p.ancestry.push(Ancestor { pid, comm: comm.into(), exe: exe.into(), argv: Arc::from([exe.to_string()]) });
        self
    }
    /// Puts the event in a Docker container (id derived from the name).
    pub fn container(mut self, name: &str, image: &str) -> Self {
        let id: String = format!("{:0>64}", hex_of(name)).chars().rev().take(64).collect();
        self.0.container = Some(Arc::new(Container {
            id,
            name: name.to_string(),
            image: image.to_string(),
            runtime: Runtime::Docker,
            ..Container::default()
        }));
        self
    }
    /// Sets the container's id (after [`EventBuilder::container`]).
    pub fn container_id(self, id: &str) -> Self {
        self.with_container(|c| c.id = id.to_string())
    }
    /// Marks the process as its container's entrypoint (first process).
    pub fn entrypoint(mut self) -> Self {
        let pid = self.process_mut().tgid;
        self.with_container(|c| c.pid = pid)
    }
    /// Changes the container with `f` (after [`EventBuilder::container`]).
    pub fn with_container(mut self, f: impl FnOnce(&mut Container)) -> Self {
        let c = self.0.container.get_or_insert_with(Default::default);
        f(Arc::make_mut(c));
        self
    }
    /// Puts the event in a pod.
    pub fn pod(mut self, name: &str, namespace: &str) -> Self {
        self.0.pod = Some(Arc::new(Pod {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: format!("uid-{name}"),
            ..Pod::default()
        }));
        self
    }
    /// Sets the event time (nanoseconds since the Unix epoch).
    pub fn time_ns(mut self, t: u64) -> Self {
        self.0.time_ns = t;
        self
    }
    /// Sets the exit code.
    pub fn exit_code(mut self, code: i32) -> Self {
        self.0.exit_code = Some(code);
        self
    }
    /// The event.
    pub fn build(self) -> Event {
        self.0
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
