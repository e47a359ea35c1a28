//! Correlation documents: parsed, then resolved against the loaded Sigma
//! rules into [`Correlation`]s.

use std::collections::HashMap;

use serde_norway::{Mapping, Value as Yaml};

use super::{
    Condition, Correlation, HOST_NAMES, Kind, MAX_CORRELATIONS, MAX_COUNT, MAX_GROUP_BY, MAX_REFERENCES,
    MAX_TIMESPAN_NS,
};
use crate::falco::Unsupported;
use crate::fields::Field;
use crate::yaml_text as text;
use crate::{Rule, RuleReport, Status, sigma_priority};

/// A correlation document, parsed; its references are resolved by the rule set.
pub struct SigmaCorrelation {
    pub title: String,
    pub id: String,
    pub name: String,
    pub level: String,
    pub tags: Vec<String>,
    /// Whether the rules it refers to also alert on their own.
    pub generate: bool,
    /// The `name`s or `id`s of the rules it counts.
    pub rules: Vec<String>,
    pub def: Result<Def, Unsupported>,
}

/// What a correlation counts, as written.
pub struct Def {
    kind: Kind,
    group_by: Vec<String>,
    /// alias -> rule name -> field.
    aliases: HashMap<String, HashMap<String, String>>,
    timespan_ns: u64,
    timespan: String,
    condition: Condition,
    field: Option<String>,
}

/// Parses a document with a `correlation` section.
pub fn parse(m: &Mapping) -> SigmaCorrelation {
    let s = |k: &str| m.get(k).and_then(text).unwrap_or_default();
    let list = |v: Option<&Yaml>| match v {
        Some(Yaml::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(v) => text(v).into_iter().collect(),
        None => Vec::new(),
    };
    let section = match m.get("correlation") {
        Some(Yaml::Mapping(c)) => Some(c),
        _ => None,
    };
    let generate = section.and_then(|c| c.get("generate")).or(m.get("generate"));
    SigmaCorrelation {
        title: s("title"),
        id: s("id"),
        name: s("name"),
        level: s("level"),
        tags: list(m.get("tags")),
        generate: matches!(generate, Some(Yaml::Bool(true))),
        rules: list(section.and_then(|c| c.get("rules"))),
        def: match section {
            Some(c) => definition(c),
            None => Err(Unsupported::Invalid("correlation must be a mapping".into())),
        },
    }
}

fn definition(c: &Mapping) -> Result<Def, Unsupported> {
    let invalid = |why: String| Unsupported::Invalid(why);
    let kind = match c.get("type").and_then(text).as_deref() {
        Some("event_count") => Kind::EventCount,
        Some("value_count") => Kind::ValueCount,
        Some("temporal") => Kind::Temporal,
        Some("temporal_ordered") => Kind::TemporalOrdered,
        Some(other) => return Err(invalid(format!("unknown correlation type {other:?}"))),
        None => return Err(invalid("correlation has no type".into())),
    };
    let rules: Vec<String> = match c.get("rules") {
        Some(Yaml::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(v) => text(v).into_iter().collect(),
        None => Vec::new(),
    };
    if rules.is_empty() {
        return Err(invalid("correlation refers to no rules".into()));
    }
    if rules.len() > MAX_REFERENCES {
        return Err(invalid(format!("correlation refers to {} rules: at most {MAX_REFERENCES}", rules.len())));
    }
    if let Some(twice) = rules.iter().enumerate().find(|(i, r)| rules[..*i].contains(r)).map(|(_, r)| r) {
        return Err(invalid(format!("correlation refers to {twice:?} more than once")));
    }
    let group_by: Vec<String> = match c.get("group-by") {
        Some(Yaml::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(v) => text(v).into_iter().collect(),
        None => Vec::new(),
    };
    if group_by.len() > MAX_GROUP_BY {
        return Err(invalid(format!("group-by names {} fields: at most {MAX_GROUP_BY}", group_by.len())));
    }
    let timespan = c.get("timespan").and_then(text).ok_or_else(|| invalid("correlation has no timespan".into()))?;
    let timespan_ns = parse_timespan(&timespan).ok_or_else(|| {
        invalid(format!("timespan {timespan:?}: expected a number and s, m, h or d, at most 30 days"))
    })?;
    let mut condition = Condition::default();
    let mut field = None;
    match c.get("condition") {
        Some(Yaml::Mapping(cond)) => {
            for (k, v) in cond {
                let key = text(k).unwrap_or_default();
                if key == "field" {
                    field = text(v);
                    continue;
                }
                let n = text(v).and_then(|t| t.trim().parse::<u64>().ok()).ok_or_else(|| {
                    invalid(format!("condition {key}: expected a count, got {:?}", text(v).unwrap_or_default()))
                })?;
                if n > MAX_COUNT {
                    return Err(Unsupported::Field(format!(
                        "condition {key}: {n}: counts above {MAX_COUNT} are not kept"
                    )));
                }
                let at_least = match key.as_str() {
                    "gt" => n + 1,
                    "gte" => n,
                    // A count that must stay under a bound, or be exact, is
                    // known only at the window's end; Vigil alerts as events
                    // arrive, when a count reaches its lower bound.
                    "lt" | "lte" | "eq" => {
                        return Err(Unsupported::Field(format!(
                            "condition {key}: Vigil alerts when a count reaches gt or gte as events arrive; \
                             an upper bound or an exact count needs the end of the window"
                        )));
                    }
                    other => return Err(invalid(format!("unknown condition {other:?} (gt, gte, lt, lte, eq, field)"))),
                };
                condition.at_least = Some(condition.at_least.map_or(at_least, |a| a.max(at_least)).max(1));
            }
        }
        Some(_) => return Err(invalid("condition must be a mapping (gte: 10)".into())),
        None => {}
    }
    if matches!(kind, Kind::Temporal | Kind::TemporalOrdered)
        && let Some(n) = condition.at_least
        && n as usize > rules.len()
    {
        return Err(invalid(format!("condition asks for {n} of {} rules: it can never be met", rules.len())));
    }
    if condition.is_empty() && matches!(kind, Kind::EventCount | Kind::ValueCount) {
        return Err(invalid("event_count and value_count need a condition".into()));
    }
    // The specification's first version put `field` beside `condition`.
    field = field.or_else(|| c.get("field").and_then(text));
    if kind == Kind::ValueCount && field.is_none() {
        return Err(invalid("value_count needs the field whose values it counts (condition: field)".into()));
    }
    let mut aliases: HashMap<String, HashMap<String, String>> = HashMap::new();
    if let Some(Yaml::Mapping(a)) = c.get("aliases") {
        for (alias, per_rule) in a {
            let (Some(alias), Yaml::Mapping(per_rule)) = (text(alias), per_rule) else {
                return Err(invalid("aliases: expected alias: {rule name: field}".into()));
            };
            let map = per_rule.iter().filter_map(|(r, f)| Some((text(r)?, text(f)?))).collect();
            aliases.insert(alias, map);
        }
    }
    Ok(Def { kind, group_by, aliases, timespan_ns, timespan, condition, field })
}

/// `90s`, `5m`, `1h`, `2d` in nanoseconds.
fn parse_timespan(t: &str) -> Option<u64> {
    let t = t.trim();
    let unit = match t.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let n: u64 = t[..t.len() - 1].parse().ok()?;
    let ns = n.checked_mul(unit)?.checked_mul(1_000_000_000)?;
    (ns > 0 && ns <= MAX_TIMESPAN_NS).then_some(ns)
}

/// A field of `group-by` or `field`: Sigma's name, else Falco's; `None` for the host.
fn field(name: &str) -> Result<Option<Field>, Unsupported> {
    if HOST_NAMES.contains(&name) {
        return Ok(None);
    }
    crate::sigma::sigma_field(name).map(Some)
}

/// What a correlation may refer to: a Sigma rule's `name` or `id`, with its
/// index in the rule set and its `name` (what aliases are keyed by), or why
/// it does not run.
pub(crate) type Refs = HashMap<String, Result<(u32, String), String>>;

/// Marks the rules that correlation documents refer to silent, unless one of
/// them says `generate: true` (whether or not the correlation itself loads:
/// a counted rule on its own would alert on every routine match); and makes
/// the correlations' own names references that say why they cannot be used.
pub(crate) fn silence<'c>(rules: &mut [Rule], docs: impl Iterator<Item = &'c SigmaCorrelation>, refs: &mut Refs) {
    let mut generated = vec![false; rules.len()];
    let mut counted = vec![false; rules.len()];
    let mut names = Vec::new();
    for c in docs {
        for r in &c.rules {
            if let Some(Ok((i, _))) = refs.get(r) {
                counted[*i as usize] = true;
                generated[*i as usize] |= c.generate;
            }
        }
        names.extend([&c.name, &c.id].into_iter().filter(|k| !k.is_empty()).cloned());
    }
    for ((rule, counted), generated) in rules.iter_mut().zip(counted).zip(generated) {
        rule.silent = counted && !generated;
    }
    for name in names {
        refs.entry(name)
            .or_insert_with(|| Err("it is a correlation; correlations of correlations are not supported yet".into()));
    }
}

/// Resolves `c` against the loaded Sigma rules and adds it to `correlations`;
/// its entry in the load report.
pub(crate) fn add(correlations: &mut Vec<Correlation>, rules: &[Rule], c: SigmaCorrelation, refs: &Refs) -> RuleReport {
    let name = if c.title.is_empty() { c.id.clone() } else { c.title.clone() };
    let priority = sigma_priority(&c.level);
    let mut entry = RuleReport {
        name: name.clone(),
        status: Status::Loaded,
        reason: None,
        kinds: Vec::new(),
        priority: format!("{priority:?}"),
    };
    let resolved = c.rules.iter().map(|r| match refs.get(r) {
        // Aliases are keyed by the rule's name; a rule referred to by id may have none.
        Some(Ok((i, rule_name))) => Ok((*i, if rule_name.is_empty() { r.clone() } else { rule_name.clone() })),
        Some(Err(why)) => Err(Unsupported::Field(format!("refers to {r:?}, which does not run: {why}"))),
        None => Err(Unsupported::Invalid(format!(
            "refers to {r:?}, which no Sigma rule loaded with it names (by name or id)"
        ))),
    });
    let compiled = c.def.as_ref().map_err(Clone::clone).and_then(|def| {
        let refs = resolved.collect::<Result<Vec<_>, _>>()?;
        // By name and by id, two references can be one rule.
        if let Some((i, _)) = refs.iter().enumerate().find(|(i, (index, _))| refs[..*i].iter().any(|(j, _)| j == index))
        {
            return Err(Unsupported::Invalid(format!("refers to the same rule twice ({:?})", c.rules[i])));
        }
        let correlation = def.resolve(&c, name, priority, &refs)?;
        if correlations.len() >= MAX_CORRELATIONS {
            return Err(Unsupported::Field(format!(
                "more than {MAX_CORRELATIONS} correlations: this one is not loaded"
            )));
        }
        Ok(correlation)
    });
    match compiled {
        Ok(correlation) => {
            let mut kinds = vigil_event::KindSet::EMPTY;
            for (i, _) in &correlation.rules {
                kinds = vigil_event::KindSet(kinds.0 | rules[*i as usize].kinds.0);
            }
            entry.kinds = kinds.iter().map(|k| k.name().to_string()).collect();
            correlations.push(correlation);
        }
        Err(Unsupported::Field(why)) => (entry.status, entry.reason) = (Status::Unsupported, Some(why)),
        Err(Unsupported::Invalid(why)) => (entry.status, entry.reason) = (Status::Invalid, Some(why)),
    }
    entry
}

impl Def {
    /// Resolves the fields for `refs` (rule index, the name it was referred by).
    fn resolve(
        &self,
        c: &SigmaCorrelation,
        name: String,
        priority: vigil_event::Priority,
        refs: &[(u32, String)],
    ) -> Result<Correlation, Unsupported> {
        let mut rules = Vec::new();
        for (index, rule_name) in refs {
            let fields = self
                .group_by
                .iter()
                .map(|g| {
                    let alias = self.aliases.get(g).and_then(|a| a.get(rule_name));
                    field(alias.unwrap_or(g)).map_err(|e| match (alias, e) {
                        (Some(_), Unsupported::Field(why)) => {
                            Unsupported::Field(format!("group-by {g} (alias for rule {rule_name}): {why}"))
                        }
                        (_, e) => e,
                    })
                })
                .collect::<Result<_, _>>()?;
            rules.push((*index, fields));
        }
        let value = match &self.field {
            Some(f) => match field(f)? {
                None => {
                    return Err(Unsupported::Field(format!(
                        "field {f} names the host: one daemon sees one host, so it has one value to count"
                    )));
                }
                v => v,
            },
            None => None,
        };
        Ok(Correlation {
            name,
            priority,
            tags: c.tags.clone(),
            id: c.id.clone(),
            kind: self.kind,
            rules,
            group_by: self.group_by.clone(),
            field: value,
            field_name: self.field.clone().unwrap_or_default(),
            timespan_ns: self.timespan_ns,
            timespan: self.timespan.clone(),
            condition: self.condition,
        })
    }
}
