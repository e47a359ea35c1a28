//! Write Vigil detection rules in Rust. A rule is a plain function over an
//! event that returns its alerts; `#[rule]` turns it into a WebAssembly
//! component the Vigil daemon loads.
//!
//! ```ignore
//! use vigil_sdk::prelude::*;
//!
//! /// A shell started inside a container.
//! #[rule(subscribe = [ProcessExec], containers_only = true, tags = ["container", "shell", "T1059"])]
//! fn shell_in_container(event: &Event) -> Option<Alert> {
//!     let process = event.process()?;
//!     let container = event.container()?;
//!     matches!(process.exe_basename(), "sh" | "bash" | "zsh").then(|| {
//!         Alert::warning(format!("shell {} in container {}", process.cmdline(), container.name()))
//!     })
//! }
//! ```
//!
//! Layout:
//! - the event types ([`Event`], [`Process`], [`Container`], [`Pod`]) are
//!   zero-copy views over the packed batch the daemon sends (from
//!   `vigil-event`); their accessors decode only what the rule reads;
//! - [`Alert`] and [`IntoAlerts`]: what a rule returns;
//! - [`rule`]: the attribute (id, version, description, subscriptions, tags,
//!   `containers_only`: no calls for the host's own processes);
//! - [`State`]: state kept across events (and across hot reloads);
//!
//! The daemon adds the rule's `tags` to every alert it raises, and the
//! event's context (command line, user, container, pod) as output fields:
//! a rule's message and extra tags/fields need only say what is specific.
//! - [`detect`]: detection helpers ([`ProcessExt`]: the program behind
//!   busybox, shells and their `-c` scripts; [`SHELLS`], [`strip_version`]);
//! - [`log`]: logging through the daemon;
//! - [`testing`]: run a rule over events in its own `cargo test`.
//!
//! The `#[rule]` forms: `fn(event: &Event) -> R` for stateless rules;
//! `fn(config: &T, event: &Event) -> R` with `#[rule(config = T)]` for
//! stateless rules operators tune (`T: Deserialize + Default`, parsed from
//! the rule's config when it loads); and `fn(state: &mut S, event: &Event)
//! -> R` where `S: State`. `R` is `Option<Alert>`, `Vec<Alert>` or `Alert`.
//! `#[rule]` also defines the rule's type, the function's name in CamelCase,
//! which [`testing::run`] runs as the daemon would. One rule per crate (the
//! crate is the component). Build with
//! `cargo build --profile rule --target wasm32-wasip2` (or, with no WASI at
//! all and about 30 KB smaller, `wasm32-unknown-unknown` linked by
//! `wasm-component-ld`: the SDK's README) and drop the `.wasm` into the
//! daemon's rule directory.
#![deny(missing_docs)]

mod alert;
pub mod detect;
pub mod log;
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use alert::{Alert, IntoAlerts, Priority};
pub use detect::{ProcessExt, SHELLS, basename, strip_version};
pub use vigil_event::packed::{
    AncestorView as Ancestor, Ancestors, ContainerView as Container, EventView as Event, LabelsView as Labels,
    PodView as Pod, ProcessView as Process, Strings,
};
pub use vigil_event::{EventKind, Runtime};
pub use vigil_sdk_macros::rule;

/// State a rule keeps across events. It starts from [`State::init`] with the
/// rule's config and is handed to the next version of the rule on a hot
/// reload (serialized as JSON, so keep its format compatible or accept a
/// fresh start).
pub trait State: Default + serde::Serialize + serde::de::DeserializeOwned + 'static {
    /// Builds the state from the rule's config (the JSON document from the
    /// daemon's config file, `{}` when none). The default ignores the config.
    fn init(config: &str) -> Result<Self, String> {
        let _ = config;
        Ok(Self::default())
    }

    /// Takes over `previous`, the state of the version this one replaces
    /// (hot reload). `self` is fresh from [`State::init`] with the current
    /// config; the default takes all of `previous`. Override it to keep
    /// parts of `self`, e.g. the config:
    /// `fn restore(&mut self, previous: Self) { *self = Self { config: self.config, ..previous } }`.
    fn restore(&mut self, previous: Self) {
        *self = previous;
    }
}

impl State for () {}

/// Parses a rule's JSON config into `T` (for [`State::init`]).
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid rule config: {e}"))
}

/// Everything a rule needs: `use vigil_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{Alert, Container, Event, EventKind, Pod, Priority, Process, ProcessExt, State, rule};
}
