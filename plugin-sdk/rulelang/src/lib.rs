//! Declarative rules for Vigil: Falco rule files and Sigma
//! `process_creation` rules, parsed and compiled once per load into an
//! evaluation form (interned lists, regexes and needle automata built, rules
//! indexed by the event kinds they can match) and evaluated over Vigil's
//! packed events without copying them.
//!
//! The daemon runs this crate inside the `declarative` rule component, so a
//! rule file is as sandboxed as any Wasm rule; the crate is plain Rust and
//! is also used natively by its tests and benchmarks.
//!
//! ```ignore
//! let (rules, report) = RuleSet::load(&[SourceFile::new("local.yaml", text)]);
//! for event in batch.iter() {
//!     for m in rules.matches(event) { /* m.name, m.priority, m.message */ }
//! }
//! ```
//!
//! Layout: [`fields`] (what a field name reads from an event), [`expr`] (the
//! compiled condition tree and its operators), [`falco`] (Falco files: lists,
//! macros, rules, overrides, exceptions; its condition parser), [`sigma`]
//! (Sigma documents and conditions), [`correlation`] (Sigma correlation
//! rules and their bounded state), and here the rule set, the load report
//! and output formatting.

pub mod correlation;
pub mod expr;
pub mod falco;
pub mod fields;
mod index;
pub mod sigma;
pub mod testing;
mod text;

use serde::{Deserialize, Serialize};
use serde_norway::Value as Yaml;
use vigil_event::packed::EventView;
use vigil_event::{EventKind, KindSet, Priority};

use std::collections::HashMap;

pub use crate::correlation::{Correlation, CorrelationMatch, CorrelationState};
use crate::expr::Node;
use crate::falco::{Definitions, Unsupported};
use crate::fields::{EventCtx, Field};

/// A YAML scalar as text (numbers and booleans too, as rule files use them).
pub(crate) fn yaml_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Largest rule file read (bytes).
pub const MAX_FILE: usize = 8 << 20;
/// Most YAML documents in one file.
const MAX_DOCUMENTS: usize = 10_000;

/// The event kinds a rule file can match.
const PROCESS_KINDS: [EventKind; 3] = [EventKind::ProcessExec, EventKind::ProcessFork, EventKind::ProcessExit];

/// One rule file's name and text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile { name: name.into(), text: text.into() }
    }
}

/// The dialect of a rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Falco,
    Sigma,
}

/// What became of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Compiled and evaluated.
    Loaded,
    /// Valid, but reads what Vigil does not collect (see `reason`).
    Unsupported,
    /// Switched off (`enabled: false`).
    Disabled,
    /// Wrong (syntax, undefined macro, bad value): see `reason`.
    Invalid,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Loaded => "loaded",
            Status::Unsupported => "unsupported",
            Status::Disabled => "disabled",
            Status::Invalid => "invalid",
        }
    }
}

/// One rule in the load report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleReport {
    pub name: String,
    pub status: Status,
    /// Why it does not run; for a loaded rule, a note (counted by a correlation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Vigil event kinds it is evaluated on.
    #[serde(default)]
    pub kinds: Vec<String>,
    pub priority: String,
}

/// One file in the load report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileReport {
    pub name: String,
    #[serde(default)]
    pub dialect: Option<Dialect>,
    /// Why the whole file could not be read (then `rules` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Entries that were wrong but did not stop the file (lists, macros).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleReport>,
}

/// What a load found, file by file and rule by rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<FileReport>,
}

impl Report {
    /// How many rules of every file have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.files.iter().flat_map(|f| &f.rules).filter(|r| r.status == status).count()
    }
}

/// A piece of an output template.
#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    /// A field, or `None` for a name Vigil cannot read (shown as `<NA>`).
    Field(String, Option<Field>),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub kinds: KindSet,
    /// The condition as compiled, before it was specialised and indexed.
    node: Node,
    output: Vec<Segment>,
    /// Fields the alert carries besides the output (Sigma's id).
    extra: Vec<(String, String)>,
    /// Counted by a correlation, and no alert of its own (Sigma's `generate: false`).
    pub silent: bool,
}

/// A rule that matched an event, with its alert's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<'r> {
    pub name: &'r str,
    pub priority: Priority,
    pub tags: &'r [String],
    pub message: String,
    /// Output fields that the daemon does not add by itself.
    pub fields: Vec<(String, String)>,
}

/// Fields the daemon adds to every alert from the event: not repeated.
pub(crate) const HOST_FIELDS: &[&str] = &[
    "evt.type",
    "evt.time",
    "evt.num",
    "proc.pid",
    "proc.tid",
    "proc.ppid",
    "proc.name",
    "proc.exepath",
    "proc.cmdline",
    "proc.cwd",
    "proc.pname",
    "proc.pexepath",
    "proc.pcmdline",
    "user.uid",
    "group.gid",
    "container.id",
    "container.full_id",
    "container.name",
    "container.image",
    "container.image.digest",
    "container.type",
    "container.privileged",
    "k8s.pod.name",
    "k8s.ns.name",
    "k8s.pod.uid",
];

/// Loaded rules, indexed by event kind.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    plans: [index::Plan; 3],
    correlations: Vec<Correlation>,
}

fn kind_slot(kind: EventKind) -> Option<usize> {
    PROCESS_KINDS.iter().position(|k| *k == kind)
}

/// Falco's priority names, any case (`INFO` too).
pub fn parse_priority(s: &str) -> Option<Priority> {
    let s = s.trim().to_ascii_lowercase();
    if s == "info" {
        return Some(Priority::Informational);
    }
    Priority::ALL.into_iter().find(|p| p.name() == s)
}

/// Sigma's `level` as a priority.
pub(crate) fn sigma_priority(level: &str) -> Priority {
    match level.to_ascii_lowercase().as_str() {
        "critical" => Priority::Critical,
        "high" => Priority::Error,
        "medium" => Priority::Warning,
        "low" => Priority::Notice,
        _ => Priority::Informational,
    }
}

fn parse_output(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()) {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                j += 1;
            }
            let mut name_end = j;
            while name_end > start && b[name_end - 1] == b'.' {
                name_end -= 1;
            }
            let mut arg = None;
            if name_end == j
                && b.get(j) == Some(&b'[')
                && let Some(close) = text[j..].find(']')
            {
                arg = Some(&text[j + 1..j + close]);
                j += close + 1;
                name_end = j;
            }
            let name = &text[start..name_end.min(j)];
            let field_name = name.split('[').next().unwrap_or(name);
            let field = Field::falco(field_name, arg).ok();
            if !lit.is_empty() {
                out.push(Segment::Text(std::mem::take(&mut lit)));
            }
            out.push(Segment::Field(text[start..name_end].to_string(), field));
            i = name_end;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        lit.push(ch);
        i += ch.len_utf8();
    }
    if !lit.is_empty() {
        out.push(Segment::Text(lit));
    }
    out
}

/// Parses a file's YAML documents (at most [`MAX_DOCUMENTS`]).
fn documents(text: &str) -> Result<Vec<Yaml>, String> {
    if text.len() > MAX_FILE {
        return Err(format!("file larger than {MAX_FILE} bytes"));
    }
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        if docs.len() == MAX_DOCUMENTS {
            return Err(format!("more than {MAX_DOCUMENTS} YAML documents"));
        }
        let v = Yaml::deserialize(de).map_err(|e| format!("not valid YAML: {e}"))?;
        if !matches!(v, Yaml::Null) {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Recognises a file's dialect from its documents.
fn dialect(docs: &[Yaml]) -> Result<Option<Dialect>, String> {
    match docs {
        [] => Ok(None),
        // Falco reads every document of a file (most files have one).
        docs if docs.iter().all(|d| matches!(d, Yaml::Sequence(_))) => Ok(Some(Dialect::Falco)),
        docs if docs.iter().all(|d| matches!(d, Yaml::Mapping(_)))
            && docs.iter().any(|d| {
                let Yaml::Mapping(m) = d else { return false };
                ["detection", "logsource", "action", "correlation"].iter().any(|k| m.contains_key(*k))
            }) =>
        {
            Ok(Some(Dialect::Sigma))
        }
        _ => Err("neither a Falco rule file (a list of rule, macro and list entries) \
                  nor a Sigma rule (documents with logsource and detection)"
            .into()),
    }
}

impl RuleSet {
    /// Loads `files` together, in the order given (callers sort by name).
    /// Never fails: what cannot be loaded is in the report.
    pub fn load(files: &[SourceFile]) -> (RuleSet, Report) {
        let mut set = RuleSet::default();
        let mut report = Report::default();
        let mut defs = Definitions::default();
        let (mut sigma_rules, mut sigma_correlations) = (Vec::new(), Vec::new());
        for (fi, file) in files.iter().enumerate() {
            let mut fr = FileReport {
                name: file.name.clone(),
                dialect: None,
                error: None,
                warnings: Vec::new(),
                rules: Vec::new(),
            };
            match documents(&file.text).and_then(|d| dialect(&d).map(|k| (d, k))) {
                Err(e) => fr.error = Some(e),
                Ok((_, None)) => {}
                Ok((docs, Some(Dialect::Falco))) => {
                    fr.dialect = Some(Dialect::Falco);
                    let entries = docs.iter().flat_map(|d| match d {
                        Yaml::Sequence(entries) => entries.as_slice(),
                        _ => &[],
                    });
                    for (ei, entry) in entries.enumerate() {
                        if let Err(e) = defs.apply(fi, entry) {
                            fr.warnings.push(format!("entry {}: {e}", ei + 1));
                        }
                    }
                }
                Ok((docs, Some(Dialect::Sigma))) => {
                    fr.dialect = Some(Dialect::Sigma);
                    let (rules, correlations) = sigma::load(&docs);
                    sigma_rules.extend(rules.into_iter().map(|r| (fi, r)));
                    sigma_correlations.extend(correlations.into_iter().map(|c| (fi, c)));
                }
            }
            report.files.push(fr);
        }
        for rule in &defs.rules {
            let priority = parse_priority(&rule.priority);
            let compiled = if rule.source != "syscall" {
                Err(Unsupported::Field(format!("source {} is not one Vigil has (only syscall)", rule.source)))
            } else if priority.is_none() {
                Err(Unsupported::Invalid(format!("unknown priority {:?}", rule.priority)))
            } else {
                defs.compile(rule)
            };
            let mut tags = rule.tags.clone();
            tags.dedup();
            let entry = set.add(
                &rule.name,
                priority.unwrap_or(Priority::Warning),
                tags,
                compiled,
                rule.enabled,
                parse_output(&rule.output),
                Vec::new(),
            );
            report.files[rule.file].rules.push(entry);
        }
        // What correlations may refer to: a Sigma rule's name or id, loaded or why not.
        let mut refs: correlation::Refs = HashMap::new();
        let mut sigma_entries = Vec::new();
        for (fi, r) in sigma_rules {
            let title = if r.title.is_empty() { r.id.clone() } else { r.title.clone() };
            let mut extra = Vec::new();
            if !r.id.is_empty() {
                extra.push(("sigma.id".to_string(), r.id.clone()));
            }
            // Sigma's process_creation is an exec.
            let node = r.node.map(|n| Node::And(vec![exec_only(), n]));
            let before = set.rules.len();
            let entry = set.add(
                &title,
                sigma_priority(&r.level),
                r.tags,
                node,
                true,
                vec![Segment::Text(title.clone())],
                extra,
            );
            let loaded = (set.rules.len() > before)
                .then(|| (before as u32, r.name.clone()))
                .ok_or_else(|| entry.reason.clone().unwrap_or_else(|| entry.status.name().into()));
            for key in [&r.name, &r.id].into_iter().filter(|k| !k.is_empty()) {
                refs.entry(key.clone()).or_insert_with(|| loaded.clone());
            }
            if let Ok((index, _)) = loaded {
                sigma_entries.push((index, fi, report.files[fi].rules.len()));
            }
            report.files[fi].rules.push(entry);
        }
        correlation::silence(&mut set.rules, sigma_correlations.iter().map(|(_, c)| c), &mut refs);
        // The report says which loaded rules raise no alert of their own.
        for (index, fi, at) in sigma_entries {
            if set.rules[index as usize].silent {
                report.files[fi].rules[at].reason = Some("counted by a correlation; no alert of its own".into());
            }
        }
        for (fi, c) in sigma_correlations {
            let entry = correlation::add(&mut set.correlations, &set.rules, c, &refs);
            report.files[fi].rules.push(entry);
        }
        for plan in &mut set.plans {
            plan.finish();
        }
        (set, report)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        name: &str,
        priority: Priority,
        tags: Vec<String>,
        compiled: Result<Node, Unsupported>,
        enabled: bool,
        output: Vec<Segment>,
        extra: Vec<(String, String)>,
    ) -> RuleReport {
        let mut entry = RuleReport {
            name: name.to_string(),
            status: Status::Loaded,
            reason: None,
            kinds: Vec::new(),
            priority: format!("{priority:?}"),
        };
        let node = match compiled {
            Ok(n) => n,
            Err(Unsupported::Field(why)) => {
                entry.status = Status::Unsupported;
                entry.reason = Some(why);
                return entry;
            }
            Err(Unsupported::Invalid(why)) => {
                entry.status = Status::Invalid;
                entry.reason = Some(why);
                return entry;
            }
        };
        // The kinds the condition can match: those its specialised form is not `false` for.
        let specialized: Vec<(EventKind, Node)> = PROCESS_KINDS
            .into_iter()
            .map(|k| (k, index::specialize(&node, k)))
            .filter(|(_, n)| !matches!(n, Node::Const(false)))
            .collect();
        let kinds: KindSet = specialized.iter().map(|(k, _)| *k).collect();
        entry.kinds = kinds.iter().map(|k| k.name().to_string()).collect();
        if kinds == KindSet::EMPTY {
            entry.status = Status::Unsupported;
            entry.reason = Some("its event types are not events Vigil sees (Vigil has exec, fork and exit)".into());
            return entry;
        }
        if !enabled {
            entry.status = Status::Disabled;
            return entry;
        }
        let index = self.rules.len() as u32;
        for (k, specialized) in specialized {
            if let Some(slot) = kind_slot(k) {
                self.plans[slot].add(index, specialized);
            }
        }
        self.rules.push(Rule { name: name.to_string(), priority, tags, kinds, node, output, extra, silent: false });
        entry
    }

    /// For exec events: how many rules there are, and how many are
    /// evaluated for every event (the others only for their programs).
    pub fn exec_plan_counts(&self) -> (usize, usize) {
        self.plans[0].counts()
    }

    /// Names of the rules every exec event is evaluated against (no prefilter
    /// applies to them), with their specialised conditions: what to rewrite
    /// to make a rule set cheaper.
    pub fn exec_unfiltered(&self) -> Vec<(&str, String)> {
        self.plans[0]
            .always()
            .into_iter()
            .map(|i| (self.rules[i as usize].name.as_str(), format!("{:?}", self.plans[0].node_of(i))))
            .collect()
    }

    /// The loaded rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The loaded Sigma correlations (their state: a [`CorrelationState`]).
    pub fn correlations(&self) -> &[Correlation] {
        &self.correlations
    }

    /// The event kinds some loaded rule can match.
    pub fn kinds(&self) -> KindSet {
        self.rules.iter().fold(KindSet::EMPTY, |acc, r| KindSet(acc.0 | r.kinds.0))
    }

    /// Indexes of the rules that match `event`, in load order.
    pub fn matching(&self, ctx: &EventCtx<'_>, out: &mut Vec<u32>) {
        let Some(slot) = ctx.kind.and_then(kind_slot) else { return };
        self.plans[slot].matching(ctx, out);
    }

    /// [`matching`](Self::matching) without the plans (specialisation,
    /// prefilters, shared checks): every rule of the kind, its condition as
    /// compiled. The two must agree; tests check that they do.
    #[doc(hidden)]
    pub fn matching_unplanned(&self, ctx: &EventCtx<'_>, out: &mut Vec<u32>) {
        let Some(kind) = ctx.kind else { return };
        for (i, r) in self.rules.iter().enumerate() {
            if r.kinds.contains(kind) && r.node.eval(ctx) {
                out.push(i as u32);
            }
        }
    }

    /// The rules that match `event` and alert, with their alerts' text
    /// (not the silent ones a correlation counts, nor correlations).
    pub fn matches<'r>(&'r self, event: EventView<'_>) -> Vec<Match<'r>> {
        let ctx = EventCtx::new(event);
        let mut hits = Vec::new();
        self.matching(&ctx, &mut hits);
        hits.into_iter().filter(|&i| !self.rules[i as usize].silent).map(|i| self.alert(i, &ctx)).collect()
    }

    /// The alert of rule `index` for the event in `ctx`.
    pub fn alert<'r>(&'r self, index: u32, ctx: &EventCtx<'_>) -> Match<'r> {
        let rule = &self.rules[index as usize];
        let mut message = String::new();
        let mut fields = rule.extra.clone();
        for seg in &rule.output {
            match seg {
                Segment::Text(t) => message.push_str(t),
                Segment::Field(name, field) => {
                    let value = field.as_ref().map_or_else(|| "<NA>".to_string(), |f| ctx.get(f).render());
                    if !HOST_FIELDS.contains(&name.as_str()) && !fields.iter().any(|(k, _)| k == name) {
                        fields.push((name.clone(), value.clone()));
                    }
                    message.push_str(&value);
                }
            }
        }
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Match { name: &rule.name, priority: rule.priority, tags: &rule.tags, message, fields }
    }
}

fn exec_only() -> Node {
    Node::Check(Box::new(expr::Check {
        field: Field::EvtType,
        transforms: Vec::new(),
        fold_case: false,
        op: expr::Op::Eq("execve".into()),
    }))
}
