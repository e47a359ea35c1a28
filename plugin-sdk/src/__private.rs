//! Glue between `#[rule]` and the component exports. Not a public API.

use std::any::Any;
use std::cell::RefCell;

use vigil_event::packed::BatchView;

use crate::{Alert, EventKind, State};

wit_bindgen::generate!({
    path: "../wit",
    world: "rule",
    pub_export_macro: true,
    export_macro_name: "__export_bindings",
    default_bindings_module: "::vigil_sdk::__private::bindings",
});

/// The bindings, under the path `default_bindings_module` names.
pub mod bindings {
    pub use super::exports;
    pub use super::vigil;
}

/// What every rule exports, with JSON for what goes back to the host
/// (see `detector` in wit/rules.wit for why).
pub use exports::vigil::rules::detector as wit;

/// What `#[rule]` implements for the user's function.
pub trait Rule: 'static {
    type State: State;
    const ID: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    const SUBSCRIPTIONS: &'static [EventKind];
    /// Only events that carry a container (and `events-lost`).
    const CONTAINERS_ONLY: bool = false;
    const TAGS: &'static [&'static str];
    /// Whether the state is handed over on hot reload (stateless rules and
    /// configured rules have nothing to hand over).
    const STATEFUL: bool = true;
    fn handle(state: &mut Self::State, event: &crate::Event<'_>, out: &mut Vec<Alert>);
}

/// The state of a rule declared with `config = T`: its parsed config, and
/// nothing to hand over on hot reload (the new version parses its own).
#[derive(Default)]
pub struct Configured<T>(pub T);

impl<T> serde::Serialize for Configured<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de, T: Default> serde::Deserialize<'de> for Configured<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d)?;
        Ok(Configured(T::default()))
    }
}

impl<T: serde::de::DeserializeOwned + Default + 'static> State for Configured<T> {
    fn init(config: &str) -> Result<Self, String> {
        crate::parse_config(config).map(Configured)
    }
    fn restore(&mut self, _previous: Self) {}
}

thread_local! {
    // The rule's state; a component instance is single-threaded.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_state<R: Rule, T>(f: impl FnOnce(&mut R::State) -> T) -> T {
    STATE.with_borrow_mut(|slot| {
        let boxed = slot.get_or_insert_with(|| Box::new(R::State::default()));
        f(boxed.downcast_mut::<R::State>().expect("state of another type"))
    })
}

/// The `rule-metadata` record, as JSON.
#[derive(serde::Serialize)]
struct MetadataJson<'a> {
    id: &'a str,
    version: &'a str,
    description: &'a str,
    subscriptions: Vec<&'static str>,
    #[serde(rename = "containers-only")]
    containers_only: bool,
    tags: &'a [&'a str],
}

/// The `alert` record, as JSON.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct AlertJson<'a> {
    rule: &'a str,
    priority: &'static str,
    message: &'a str,
    tags: &'a [String],
    fields: Vec<LabelJson<'a>>,
    event_index: u32,
}

#[derive(serde::Serialize)]
struct LabelJson<'a> {
    key: &'a str,
    value: &'a str,
}

pub fn metadata<R: Rule>() -> String {
    serde_json::to_string(&MetadataJson {
        id: R::ID,
        version: R::VERSION,
        description: R::DESCRIPTION,
        subscriptions: R::SUBSCRIPTIONS.iter().map(|k| k.name()).collect(),
        containers_only: R::CONTAINERS_ONLY,
        tags: R::TAGS,
    })
    // Serializing these structs to a String cannot fail; no panic path (and
    // its error formatting) in every component.
    .unwrap_or_default()
}

pub fn init<R: Rule>(config: String) -> Result<(), String> {
    let state = R::State::init(&config)?;
    STATE.with_borrow_mut(|slot| *slot = Some(Box::new(state)));
    Ok(())
}

pub fn on_batch<R: Rule>(batch: Vec<u8>) -> String {
    let view = match BatchView::new(&batch) {
        Ok(v) => v,
        Err(e) => {
            // Straight to the host (not through `crate::log`, which is built on these bindings).
            #[cfg(target_arch = "wasm32")]
            vigil::rules::host::log(vigil::rules::host::LogLevel::Error, &format!("bad batch from the host: {e}"));
            #[cfg(not(target_arch = "wasm32"))]
            eprintln!("[Error] bad batch from the host: {e}");
            return String::new();
        }
    };
    let mut alerts: Vec<(u32, Alert)> = Vec::new();
    let mut out = Vec::new();
    with_state::<R, _>(|state| {
        for (i, event) in view.iter().enumerate() {
            // The host already does this; a host older than the field does not.
            if R::CONTAINERS_ONLY && event.container().is_none() && event.kind() != Some(EventKind::EventsLost) {
                continue;
            }
            R::handle(state, &event, &mut out);
            alerts.extend(out.drain(..).map(|a| (i as u32, a)));
        }
    });
    if alerts.is_empty() {
        return String::new();
    }
    let json: Vec<AlertJson> = alerts
        .iter()
        .map(|(i, a)| AlertJson {
            rule: R::ID,
            priority: a.priority.name(),
            message: &a.message,
            tags: &a.tags,
            fields: a.fields.iter().map(|(key, value)| LabelJson { key, value }).collect(),
            event_index: *i,
        })
        .collect();
    serde_json::to_string(&json).unwrap_or_default()
}

pub fn snapshot<R: Rule>() -> Option<Vec<u8>> {
    if !R::STATEFUL {
        return None;
    }
    with_state::<R, _>(|state| serde_json::to_vec(state).ok())
}

pub fn restore<R: Rule>(bytes: Vec<u8>) -> Result<(), String> {
    // A stateless rule snapshots nothing, so the host has nothing to hand
    // it; and its component carries no JSON parser for a state it lacks.
    if !R::STATEFUL {
        return Ok(());
    }
    let previous: R::State = serde_json::from_slice(&bytes).map_err(|e| format!("cannot restore state: {e}"))?;
    // The current state is fresh from `init` with the current config.
    with_state::<R, _>(|state| state.restore(previous));
    Ok(())
}

/// Emits the component exports for a `#[rule]` (wasm32 only: natively the
/// crate is a plain library its tests call).
#[macro_export]
#[doc(hidden)]
macro_rules! __export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::bindings::exports::vigil::rules::detector::Guest;
            struct __VigilExport;
            impl Guest for __VigilExport {
                fn metadata() -> String {
                    $crate::__private::metadata::<$rule>()
                }
                fn init(config: String) -> Result<(), String> {
                    $crate::__private::init::<$rule>(config)
                }
                fn on_batch(batch: Vec<u8>) -> String {
                    $crate::__private::on_batch::<$rule>(batch)
                }
                fn snapshot() -> Option<Vec<u8>> {
                    $crate::__private::snapshot::<$rule>()
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    $crate::__private::restore::<$rule>(state)
                }
            }
    $crate::__private::__export_bindings!(__VigilExport with_types_in $crate::__private::bindings);
        };
    };
}
