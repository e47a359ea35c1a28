//! Falco rule files: lists, macros and rules across all files of a
//! directory, in file-name order, with `append`, `override`, `enabled`
//! switches and `exceptions`; each rule compiled once into a [`Node`].

pub mod condition;

use std::collections::BTreeMap as HashMap;

use serde_norway::{Mapping, Value as Yaml};

use self::condition::{Ast, CheckAst, Operand, Rhs, Word};
use crate::expr::{Check, Needles, Node, NumOp, Op, Set, Transform, glob_regex, regex_limited};
use crate::fields::Field;

/// Deepest macro-in-macro or list-in-list expansion.
const MAX_EXPANSION: usize = 64;
/// Most checks and list items one rule may expand to (macros used twice
/// in each other double at every level).
const MAX_EXPANDED: usize = 100_000;
/// Deepest nesting of `and`/`or`/`not` once macros are expanded.
const MAX_NESTING: usize = 500;

/// Everything the Falco files of a load define, in order.
#[derive(Default)]
pub struct Definitions {
    lists: HashMap<String, Vec<String>>,
    macros: HashMap<String, String>,
    pub rules: Vec<FalcoRule>,
    index: HashMap<String, usize>,
    /// What is left of [`MAX_EXPANDED`] for the rule being compiled.
    budget: std::cell::Cell<usize>,
}

/// A rule as defined, then appended to and overridden.
#[derive(Debug, Clone)]
pub struct FalcoRule {
    pub name: String,
    /// Index of the file that first defined it.
    pub file: usize,
    pub condition: String,
    pub output: String,
    pub desc: String,
    pub priority: String,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub source: String,
    pub exceptions: Vec<Exception>,
}

#[derive(Debug, Clone)]
pub struct Exception {
    pub name: String,
    /// `None`: the single-field form (`fields: proc.name`, values a flat list).
    pub fields: Option<Vec<String>>,
    pub single_field: Option<String>,
    pub comps: Vec<String>,
    pub values: Vec<Yaml>,
}

use crate::yaml_text as text;

fn get<'m>(m: &'m Mapping, key: &str) -> Option<&'m Yaml> {
    m.get(key)
}

fn get_str(m: &Mapping, key: &str) -> Result<Option<String>, String> {
    match get(m, key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(v) => text(v).map(Some).ok_or_else(|| format!("`{key}` must be a string")),
    }
}

fn get_bool(m: &Mapping, key: &str) -> Result<Option<bool>, String> {
    match get(m, key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::Bool(b)) => Ok(Some(*b)),
        Some(Yaml::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(format!("`{key}` must be true or false")),
    }
}

fn get_strings(m: &Mapping, key: &str) -> Result<Option<Vec<String>>, String> {
    match get(m, key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::Sequence(items)) => items
            .iter()
            .map(|v| text(v).ok_or_else(|| format!("`{key}` must be a list of strings")))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(format!("`{key}` must be a list")),
    }
}

/// How an `override:` treats one key.
fn override_of(m: &Mapping, key: &str) -> Result<Option<bool>, String> {
    let Some(Yaml::Mapping(o)) = get(m, "override") else {
        return Ok(None);
    };
    match get(o, key).and_then(text).as_deref() {
        None => Ok(None),
        Some("append") => Ok(Some(true)),
        Some("replace") => Ok(Some(false)),
        Some(other) => Err(format!("override of `{key}` must be append or replace, not {other:?}")),
    }
}

impl Definitions {
    /// Applies one entry of file `file`. An error concerns that entry only.
    pub fn apply(&mut self, file: usize, entry: &Yaml) -> Result<Option<String>, String> {
        let Yaml::Mapping(m) = entry else {
            return Err("an entry must be a mapping (rule, macro or list)".into());
        };
        let append = get_bool(m, "append")?.unwrap_or(false);
        if let Some(name) = get_str(m, "list")? {
            let items = get_strings(m, "items")?.unwrap_or_default();
            let append = override_of(m, "items")?.unwrap_or(append);
            match self.lists.get_mut(&name) {
                Some(old) if append => old.extend(items),
                None if append => return Err(format!("list {name}: append to a list not defined before")),
                _ => {
                    self.lists.insert(name.clone(), items);
                }
            }
            return Ok(Some(name));
        }
        if let Some(name) = get_str(m, "macro")? {
            let cond = get_str(m, "condition")?.ok_or_else(|| format!("macro {name} has no condition"))?;
            let append = override_of(m, "condition")?.unwrap_or(append);
            match self.macros.get_mut(&name) {
                Some(old) if append => {
                    old.push(' ');
                    old.push_str(&cond);
                }
                None if append => return Err(format!("macro {name}: append to a macro not defined before")),
                _ => {
                    self.macros.insert(name.clone(), cond);
                }
            }
            return Ok(Some(name));
        }
        if let Some(name) = get_str(m, "rule")? {
            self.apply_rule(file, name.clone(), m, append)?;
            return Ok(Some(name));
        }
        if get(m, "required_engine_version").is_some()
            || get(m, "required_plugin_versions").is_some()
            || get(m, "required_version").is_some()
        {
            return Ok(None);
        }
        Err("unknown entry: expected rule, macro, list or required_engine_version".into())
    }

    fn apply_rule(&mut self, file: usize, name: String, m: &Mapping, append: bool) -> Result<(), String> {
        let is_override = get(m, "override").is_some();
        let existing = self.index.get(&name).copied();
        if append || is_override {
            let i = existing.ok_or_else(|| format!("rule {name}: append or override of a rule not defined before"))?;
            let rule = &mut self.rules[i];
            let mode = |key: &str| -> Result<Option<bool>, String> {
                match override_of(m, key)? {
                    Some(a) => Ok(Some(a)),
                    // Legacy `append: true` appends the condition and exceptions.
                    None if append && get(m, key).is_some() => {
                        Ok(Some(matches!(key, "condition" | "exceptions" | "output" | "desc")))
                    }
                    None if get(m, key).is_some() && is_override => {
                        Err(format!("rule {name}: `{key}` given without saying how to override it"))
                    }
                    None => Ok(None),
                }
            };
            if let Some(app) = mode("condition")? {
                let c = get_str(m, "condition")?.unwrap_or_default();
                rule.condition = if app { format!("{} {c}", rule.condition) } else { c };
            }
            if let Some(app) = mode("output")? {
                let o = get_str(m, "output")?.unwrap_or_default();
                rule.output = if app { format!("{} {o}", rule.output) } else { o };
            }
            if let Some(app) = mode("desc")? {
                let d = get_str(m, "desc")?.unwrap_or_default();
                rule.desc = if app { format!("{} {d}", rule.desc) } else { d };
            }
            if let Some(app) = mode("tags")? {
                let t = get_strings(m, "tags")?.unwrap_or_default();
                if app { rule.tags.extend(t) } else { rule.tags = t }
            }
            if mode("priority")?.is_some() {
                rule.priority = get_str(m, "priority")?.unwrap_or_default();
            }
            if let Some(app) = mode("exceptions")? {
                let new = exceptions(m)?;
                if !app {
                    rule.exceptions = new;
                } else {
                    for e in new {
                        match rule.exceptions.iter_mut().find(|x| x.name == e.name) {
                            Some(x) => x.values.extend(e.values),
                            None => rule.exceptions.push(e),
                        }
                    }
                }
            }
            if mode("enabled")?.is_some() || (append && get(m, "enabled").is_some()) {
                rule.enabled = get_bool(m, "enabled")?.unwrap_or(true);
            }
            return Ok(());
        }
        let condition = get_str(m, "condition")?;
        if condition.is_none() && get(m, "enabled").is_some() {
            // `- rule: X / enabled: false` switches an earlier rule.
            let i = existing.ok_or_else(|| format!("rule {name}: enabled switch for a rule not defined before"))?;
            self.rules[i].enabled = get_bool(m, "enabled")?.unwrap_or(true);
            return Ok(());
        }
        let condition = condition.ok_or_else(|| format!("rule {name} has no condition"))?;
        let rule = FalcoRule {
            name: name.clone(),
            file,
            condition,
            output: get_str(m, "output")?.unwrap_or_default(),
            desc: get_str(m, "desc")?.unwrap_or_default(),
            priority: get_str(m, "priority")?.unwrap_or_else(|| "warning".into()),
            tags: get_strings(m, "tags")?.unwrap_or_default(),
            enabled: get_bool(m, "enabled")?.unwrap_or(true),
            source: get_str(m, "source")?.unwrap_or_else(|| "syscall".into()),
            exceptions: exceptions(m)?,
        };
        match existing {
            Some(i) => self.rules[i] = FalcoRule { file: self.rules[i].file, ..rule },
            None => {
                self.index.insert(name, self.rules.len());
                self.rules.push(rule);
            }
        }
        Ok(())
    }

    /// Compiles `rule`'s condition with its exceptions.
    pub fn compile(&self, rule: &FalcoRule) -> Result<Node, Unsupported> {
        self.budget.set(MAX_EXPANDED);
        let ast = condition::parse(&rule.condition).map_err(Unsupported::Invalid)?;
        let mut node = self.resolve(&ast, 0, 0)?;
        let mut excepted = Vec::new();
        for e in &rule.exceptions {
            for row in &e.values {
                excepted.push(self.exception_row(e, row).map_err(|m| match m {
                    Unsupported::Invalid(s) => Unsupported::Invalid(format!("exception {}: {s}", e.name)),
                    other => other,
                })?);
            }
        }
        if !excepted.is_empty() {
            node = Node::And(vec![node, Node::Not(Box::new(Node::Or(excepted)))]);
        }
        Ok(node)
    }

    fn exception_row(&self, e: &Exception, row: &Yaml) -> Result<Node, Unsupported> {
        let word = |v: &Yaml| -> Result<Vec<Word>, Unsupported> {
            match v {
                Yaml::Sequence(items) => items
                    .iter()
                    .map(|i| text(i).map(|t| Word { text: t, quoted: false }))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Unsupported::Invalid("exception values must be strings".into())),
                other => text(other)
                    .map(|t| vec![Word { text: t, quoted: false }])
                    .ok_or_else(|| Unsupported::Invalid("exception values must be strings".into())),
            }
        };
        let check = |field: &str, comp: &str, value: Vec<Word>| -> Result<Node, Unsupported> {
            let (name, arg) = match field.split_once('[') {
                Some((n, rest)) => (n.to_string(), Some(rest.trim_end_matches(']').to_string())),
                None => (field.to_string(), None),
            };
            let lhs = Operand { transforms: Vec::new(), field: name, arg };
            let rhs = if matches!(comp, "in" | "intersects" | "pmatch") {
                Rhs::List(value)
            } else {
                let one = value.into_iter().next().unwrap_or(Word { text: String::new(), quoted: true });
                Rhs::One(one)
            };
            self.resolve(&Ast::Check(CheckAst { lhs, op: comp.to_lowercase(), rhs }), 0, 0)
        };
        match (&e.fields, &e.single_field) {
            (Some(fields), _) if fields.is_empty() => Err(Unsupported::Invalid("an exception with no fields".into())),
            (Some(fields), _) => {
                let Yaml::Sequence(values) = row else {
                    return Err(Unsupported::Invalid("each exception value must be a list, one per field".into()));
                };
                if values.len() != fields.len() {
                    return Err(Unsupported::Invalid(format!(
                        "exception value has {} items for {} fields",
                        values.len(),
                        fields.len()
                    )));
                }
                let mut parts = Vec::new();
                for (i, (f, v)) in fields.iter().zip(values).enumerate() {
                    let comp = e.comps.get(i).map_or("=", |c| c.as_str());
                    parts.push(check(f, comp, word(v)?)?);
                }
                Ok(Node::And(parts))
            }
            (None, Some(field)) => {
                let comp = e.comps.first().map_or("in", |c| c.as_str());
                check(field, comp, word(row)?)
            }
            (None, None) => Ok(Node::Const(false)),
        }
    }

    /// Takes `n` from the rule's expansion budget.
    fn spend(&self, n: usize) -> Result<(), Unsupported> {
        let left = self.budget.get();
        if n > left {
            return Err(Unsupported::Invalid(format!(
                "the condition expands to more than {MAX_EXPANDED} checks and list items"
            )));
        }
        self.budget.set(left - n);
        Ok(())
    }

    /// `ast` with its macros expanded (`depth` macros deep) and its checks
    /// compiled, `nesting` operators deep.
    fn resolve(&self, ast: &Ast, depth: usize, nesting: usize) -> Result<Node, Unsupported> {
        if depth > MAX_EXPANSION {
            return Err(Unsupported::Invalid("macros nested too deep (a macro that uses itself?)".into()));
        }
        if nesting > MAX_NESTING {
            return Err(Unsupported::Invalid(format!("the condition nests deeper than {MAX_NESTING} once expanded")));
        }
        self.spend(1)?;
        let all = |parts: &[Ast]| parts.iter().map(|p| self.resolve(p, depth, nesting + 1)).collect::<Result<_, _>>();
        Ok(match ast {
            Ast::And(parts) => Node::And(all(parts)?),
            Ast::Or(parts) => Node::Or(all(parts)?),
            Ast::Not(inner) => Node::Not(Box::new(self.resolve(inner, depth, nesting + 1)?)),
            Ast::Macro(name) => {
                let text =
                    self.macros.get(name).ok_or_else(|| Unsupported::Invalid(format!("undefined macro {name}")))?;
                let ast = condition::parse(text).map_err(|e| Unsupported::Invalid(format!("macro {name}: {e}")))?;
                self.resolve(&ast, depth + 1, nesting + 1)?
            }
            Ast::Check(c) => Node::Check(Box::new(self.check(c)?)),
        })
    }

    fn expand(&self, words: &[Word], depth: usize, out: &mut Vec<String>) -> Result<(), Unsupported> {
        if depth > MAX_EXPANSION {
            return Err(Unsupported::Invalid("lists nested too deep (a list that contains itself?)".into()));
        }
        for w in words {
            match self.lists.get(&w.text) {
                Some(items) if !w.quoted => {
                    self.spend(items.len())?;
                    let items: Vec<Word> = items.iter().map(|t| Word { text: t.clone(), quoted: false }).collect();
                    self.expand(&items, depth + 1, out)?;
                }
                _ => out.push(unquote(&w.text)),
            }
        }
        Ok(())
    }

    fn check(&self, c: &CheckAst) -> Result<Check, Unsupported> {
        let field = operand_field(&c.lhs)?;
        let mut transforms = Vec::new();
        for t in c.lhs.transforms.iter().rev() {
            transforms.push(match t.as_str() {
                "tolower" => Transform::Lower,
                "toupper" => Transform::Upper,
                "basename" => Transform::Basename,
                "len" => Transform::Len,
                "b64" => Transform::B64,
                other => return Err(Unsupported::Invalid(format!("unknown transformer {other}"))),
            });
        }
        let numeric = match transforms.last() {
            Some(t) => *t == Transform::Len,
            None => field.numeric(),
        };
        let one = || -> Result<String, Unsupported> {
            match &c.rhs {
                Rhs::One(w) => Ok(w.text.clone()),
                Rhs::List(ws) if ws.len() == 1 => Ok(ws[0].text.clone()),
                _ => Err(Unsupported::Invalid(format!("operator {} takes one value", c.op))),
            }
        };
        let list = || -> Result<Vec<String>, Unsupported> {
            let mut out = Vec::new();
            match &c.rhs {
                Rhs::List(ws) => self.expand(ws, 0, &mut out)?,
                Rhs::One(w) => self.expand(std::slice::from_ref(w), 0, &mut out)?,
                _ => return Err(Unsupported::Invalid(format!("operator {} takes a list", c.op))),
            }
            Ok(out)
        };
        let invalid = |s: String| Unsupported::Invalid(s);
        let mut fold_case = false;
        if let Rhs::Field(other) = &c.rhs {
            if !other.transforms.is_empty() {
                return Err(invalid("transformers inside val() are not supported".into()));
            }
            let other = operand_field(other)?;
            let op = match c.op.as_str() {
                "=" => Op::EqField(other),
                "!=" => Op::NeField(other),
                op => return Err(invalid(format!("val() is supported with = and !=, not {op}"))),
            };
            return Ok(Check { field, transforms, fold_case, op });
        }
        let op = match c.op.as_str() {
            "exists" => Op::Exists,
            "=" | "!=" => {
                let v = one()?;
                match (numeric, v.parse::<i64>()) {
                    (true, Ok(n)) => Op::Num(if c.op == "=" { NumOp::Eq } else { NumOp::Ne }, n),
                    _ if c.op == "=" => Op::Eq(v),
                    _ => Op::Ne(v),
                }
            }
            "<" | "<=" | ">" | ">=" => {
                let v = one()?;
                let n =
                    v.parse::<i64>().map_err(|_| invalid(format!("operator {} needs a number, not {v:?}", c.op)))?;
                let op = match c.op.as_str() {
                    "<" => NumOp::Lt,
                    "<=" => NumOp::Le,
                    ">" => NumOp::Gt,
                    _ => NumOp::Ge,
                };
                Op::Num(op, n)
            }
            "contains" => Op::Contains(Needles::new(vec![one()?])),
            "icontains" => {
                fold_case = true;
                Op::Contains(Needles::new(vec![one()?.to_lowercase()]))
            }
            "bcontains" => Op::Contains(Needles::new(vec![hex(&one()?).map_err(invalid)?])),
            "startswith" => Op::StartsWith(vec![one()?]),
            "istartswith" => {
                fold_case = true;
                Op::StartsWith(vec![one()?.to_lowercase()])
            }
            "bstartswith" => Op::StartsWith(vec![hex(&one()?).map_err(invalid)?]),
            "endswith" => Op::EndsWith(vec![one()?]),
            "iendswith" => {
                fold_case = true;
                Op::EndsWith(vec![one()?.to_lowercase()])
            }
            "glob" => Op::Regex(vec![glob_regex(&one()?, false).map_err(invalid)?]),
            "iglob" => Op::Regex(vec![glob_regex(&one()?, true).map_err(invalid)?]),
            // Falco's regex must match the whole value (RE2 anchored at both ends).
            "regex" => Op::Regex(vec![regex_limited(&format!("^(?:{})$", one()?)).map_err(invalid)?]),
            "pmatch" => Op::PMatch(list()?),
            "in" => Op::In(Set::new(list()?)),
            "intersects" => Op::Intersects(Set::new(list()?)),
            other => return Err(invalid(format!("unknown operator {other}"))),
        };
        Ok(Check { field, transforms, fold_case, op })
    }
}

fn operand_field(o: &Operand) -> Result<Field, Unsupported> {
    Field::falco(&o.field, o.arg.as_deref()).map_err(Unsupported::Field)
}

/// Strips one level of quotes from a list item written `'"x y"'` in YAML.
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

fn hex(s: &str) -> Result<String, String> {
    let s = s.trim();
    let not_hex = || format!("{s:?} is not hex bytes");
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_hex());
    }
    let bytes = s
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(not_hex)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn exceptions(m: &Mapping) -> Result<Vec<Exception>, String> {
    let Some(list) = get(m, "exceptions") else {
        return Ok(Vec::new());
    };
    let Yaml::Sequence(list) = list else {
        return Err("`exceptions` must be a list".into());
    };
    let mut out = Vec::new();
    for e in list {
        let Yaml::Mapping(e) = e else {
            return Err("each exception must be a mapping".into());
        };
        let name = get_str(e, "name")?.ok_or("an exception has no name")?;
        let (fields, single_field) = match get(e, "fields") {
            Some(Yaml::Sequence(_)) => (get_strings(e, "fields")?, None),
            Some(v) => (None, text(v)),
            None => (None, None),
        };
        let comps = match get(e, "comps") {
            Some(Yaml::Sequence(_)) => get_strings(e, "comps")?.unwrap_or_default(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        };
        let values = match get(e, "values") {
            Some(Yaml::Sequence(v)) => v.clone(),
            None | Some(Yaml::Null) => Vec::new(),
            Some(_) => return Err(format!("exception {name}: `values` must be a list")),
        };
        out.push(Exception { name, fields, single_field, comps, values });
    }
    Ok(out)
}

/// Why a rule is not run.
#[derive(Debug, Clone, PartialEq)]
pub enum Unsupported {
    /// It reads a field Vigil has no source for.
    Field(String),
    /// Its text is wrong (syntax, undefined macro, bad value).
    Invalid(String),
}
