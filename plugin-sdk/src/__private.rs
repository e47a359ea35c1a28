//! Glue between `#[rule]` and the component exports. Not a public API.

use std::any::Any;
use std::cell::RefCell;

use vigil_event::packed::BatchView;

use crate::{Alert, EventKind, Priority, State};

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

use exports::vigil::rules::detector as wit;
use vigil::rules::types as wit_types;

/// What `#[rule]` implements for the user's function.
pub trait Rule: 'static {
    type State: State;
    const ID: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    const SUBSCRIPTIONS: &'static [EventKind];
    const TAGS: &'static [&'static str];
    fn handle(state: &mut Self::State, event: &crate::Event<'_>, out: &mut Vec<Alert>);
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

pub fn metadata<R: Rule>() -> wit_types::RuleMetadata {
    wit_types::RuleMetadata {
        id: R::ID.to_string(),
        version: R::VERSION.to_string(),
        description: R::DESCRIPTION.to_string(),
        subscriptions: R::SUBSCRIPTIONS.iter().map(|k| kind_to_wit(*k)).collect(),
        tags: R::TAGS.iter().map(|t| t.to_string()).collect(),
    }
}

pub fn init<R: Rule>(config: String) -> Result<(), String> {
    let state = R::State::init(&config)?;
    STATE.with_borrow_mut(|slot| *slot = Some(Box::new(state)));
    Ok(())
}

pub fn on_batch<R: Rule>(batch: Vec<u8>) -> Vec<wit_types::Alert> {
    let view = match BatchView::new(&batch) {
        Ok(v) => v,
        Err(e) => {
            crate::log::log(crate::log::Level::Error, &format!("bad batch from the host: {e}"));
            return Vec::new();
        }
    };
    let mut alerts = Vec::new();
    let mut out = Vec::new();
    with_state::<R, _>(|state| {
        for (i, event) in view.iter().enumerate() {
            R::handle(state, &event, &mut out);
            alerts.extend(out.drain(..).map(|a| alert_to_wit::<R>(a, i as u32)));
        }
    });
    alerts
}

pub fn snapshot<R: Rule>() -> Option<Vec<u8>> {
    if std::any::TypeId::of::<R::State>() == std::any::TypeId::of::<()>() {
        return None;
    }
    with_state::<R, _>(|state| serde_json::to_vec(state).ok())
}

pub fn restore<R: Rule>(bytes: Vec<u8>) -> Result<(), String> {
    let previous: R::State = serde_json::from_slice(&bytes).map_err(|e| format!("cannot restore state: {e}"))?;
    // The current state is fresh from `init` with the current config.
    with_state::<R, _>(|state| state.restore(previous));
    Ok(())
}

fn alert_to_wit<R: Rule>(a: Alert, event_index: u32) -> wit_types::Alert {
    wit_types::Alert {
        rule: R::ID.to_string(),
        priority: match a.priority {
            Priority::Emergency => wit_types::Priority::Emergency,
            Priority::Alert => wit_types::Priority::Alert,
            Priority::Critical => wit_types::Priority::Critical,
            Priority::Error => wit_types::Priority::Error,
            Priority::Warning => wit_types::Priority::Warning,
            Priority::Notice => wit_types::Priority::Notice,
            Priority::Informational => wit_types::Priority::Informational,
            Priority::Debug => wit_types::Priority::Debug,
        },
        message: a.message,
        tags: a.tags,
        fields: a.fields.into_iter().map(|(key, value)| wit_types::Label { key, value }).collect(),
        event_index,
    }
}

fn kind_to_wit(k: EventKind) -> wit_types::EventKind {
    use wit_types::EventKind as W;
    match k {
        EventKind::ProcessExec => W::ProcessExec,
        EventKind::ProcessFork => W::ProcessFork,
        EventKind::ProcessExit => W::ProcessExit,
        EventKind::CgroupMkdir => W::CgroupMkdir,
        EventKind::CgroupRmdir => W::CgroupRmdir,
        EventKind::ContainerCreate => W::ContainerCreate,
        EventKind::ContainerStart => W::ContainerStart,
        EventKind::ContainerStop => W::ContainerStop,
        EventKind::ContainerDelete => W::ContainerDelete,
        EventKind::EventsLost => W::EventsLost,
    }
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
            use $crate::__private::bindings::vigil::rules::types::{Alert, RuleMetadata};
            struct __VigilExport;
            impl Guest for __VigilExport {
                fn metadata() -> RuleMetadata {
                    $crate::__private::metadata::<$rule>()
                }
                fn init(config: String) -> Result<(), String> {
                    $crate::__private::init::<$rule>(config)
                }
                fn on_batch(batch: Vec<u8>) -> Vec<Alert> {
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

// Keeps the generated `wit` module in use on native builds.
#[allow(dead_code)]
fn _assert_guest_trait_exists<T: wit::Guest>() {}
