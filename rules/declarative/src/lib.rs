//! The interpreter component for rule files. The daemon instantiates it with
//! the rule directory's YAML files as its config (`{"id": ..., "files":
//! [{"name", "text"}]}`); `init` compiles them once with `vigil-rulelang`,
//! `metadata` (called again after `init`) reports what loaded, what did not
//! and why, and which event kinds the rules need; `on-batch` evaluates every
//! loaded rule over each event and returns alerts named after the rules, and
//! counts the matches Sigma correlations refer to (their groups live here,
//! bounded, and start empty when the files are reloaded).
//!
//! Before `init` (the daemon's metadata probe) it describes itself as an
//! interpreter (`"interprets": ["falco", "sigma"]`), so the daemon does not
//! run it as a rule of its own.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use vigil_event::EventKind;
use vigil_event::packed::BatchView;
use vigil_rulelang::fields::EventCtx;
use vigil_rulelang::{CorrelationState, Report, RuleSet, SourceFile};

/// What the daemon passes to `init`.
#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    id: String,
    #[serde(default)]
    files: Vec<SourceFile>,
}

struct Loaded {
    id: String,
    rules: RuleSet,
    report: Report,
    correlations: CorrelationState,
}

thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

#[derive(Serialize)]
struct Metadata<'a> {
    id: &'a str,
    version: &'a str,
    description: &'a str,
    subscriptions: Vec<&'static str>,
    #[serde(rename = "containers-only")]
    containers_only: bool,
    tags: [&'a str; 0],
    interprets: [&'a str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a Report>,
}

const DESCRIPTION: &str = "Runs Falco rule files and Sigma process_creation rules";

pub fn metadata() -> String {
    LOADED.with_borrow(|loaded| {
        let (id, subscriptions, report) = match loaded {
            Some(l) => {
                let mut kinds: Vec<&'static str> = l.rules.kinds().iter().map(EventKind::name).collect();
                if kinds.is_empty() {
                    // Nothing loaded: subscribe to something cheap, so the
                    // instance stays valid and reports.
                    kinds.push(EventKind::ProcessExec.name());
                }
                (l.id.as_str(), kinds, Some(&l.report))
            }
            None => ("declarative", vec![EventKind::ProcessExec.name()], None),
        };
        serde_json::to_string(&Metadata {
            id,
            version: env!("CARGO_PKG_VERSION"),
            description: DESCRIPTION,
            subscriptions,
            containers_only: false,
            tags: [],
            interprets: ["falco", "sigma"],
            report,
        })
        .expect("metadata serializes")
    })
}

pub fn init(config: String) -> Result<(), String> {
    let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid interpreter config: {e}"))?;
    let (rules, report) = RuleSet::load(&config.files);
    let id = if config.id.is_empty() { "rule-files".to_string() } else { config.id };
    LOADED.with_borrow_mut(|l| *l = Some(Loaded { id, rules, report, correlations: CorrelationState::default() }));
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct AlertJson<'a> {
    rule: &'a str,
    priority: &'static str,
    message: String,
    tags: &'a [String],
    fields: Vec<Label>,
    event_index: u32,
}

#[derive(Serialize)]
struct Label {
    key: String,
    value: String,
}

pub fn on_batch(batch: Vec<u8>) -> String {
    let Ok(view) = BatchView::new(&batch) else {
        return String::new();
    };
    LOADED.with_borrow_mut(|loaded| {
        let Some(l) = loaded else { return String::new() };
        let mut alerts = Vec::new();
        let (mut hits, mut completed) = (Vec::new(), Vec::new());
        // One context for the batch, reset per event: its allocations are kept.
        let mut ctx: Option<EventCtx> = None;
        for (i, event) in view.iter().enumerate() {
            let ctx = match &mut ctx {
                Some(c) => {
                    c.reset(event);
                    c
                }
                None => ctx.insert(EventCtx::new(event)),
            };
            hits.clear();
            l.rules.matching(ctx, &mut hits);
            for &h in &hits {
                if l.rules.rules()[h as usize].silent {
                    continue;
                }
                let m = l.rules.alert(h, ctx);
                alerts.push(alert(m.name, m.priority, m.message, m.tags, m.fields, i));
            }
            l.correlations.observe(l.rules.correlations(), &hits, ctx, &mut completed);
            for m in completed.drain(..) {
                alerts.push(alert(m.name, m.priority, m.message, m.tags, m.fields, i));
            }
        }
        if alerts.is_empty() { String::new() } else { serde_json::to_string(&alerts).expect("alerts serialize") }
    })
}

fn alert<'a>(
    rule: &'a str,
    priority: vigil_event::Priority,
    message: String,
    tags: &'a [String],
    fields: Vec<(String, String)>,
    index: usize,
) -> AlertJson<'a> {
    AlertJson {
        rule,
        priority: priority.name(),
        message,
        tags,
        fields: fields.into_iter().map(|(key, value)| Label { key, value }).collect(),
        event_index: index as u32,
    }
}

#[cfg(target_arch = "wasm32")]
mod export {
    use vigil_sdk::__private::bindings::exports::vigil::rules::detector::Guest;

    struct Interpreter;

    impl Guest for Interpreter {
        fn metadata() -> String {
            super::metadata()
        }
        fn init(config: String) -> Result<(), String> {
            super::init(config)
        }
        fn on_batch(batch: Vec<u8>) -> String {
            super::on_batch(batch)
        }
        fn snapshot() -> Option<Vec<u8>> {
            None
        }
        fn restore(_state: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
    }

    vigil_sdk::__private::__export_bindings!(Interpreter with_types_in vigil_sdk::__private::bindings);
}
