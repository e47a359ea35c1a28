//! Sigma rules for `process_creation` on Linux, compiled into the same
//! evaluation form as Falco rules.

use serde_norway::{Mapping, Value as Yaml};

use crate::correlation::{self, SigmaCorrelation};
use crate::expr::{Check, Needles, Node, NumOp, Op, Set, glob_regex, regex_limited};
use crate::falco::Unsupported;
use crate::fields::Field;

/// A Sigma rule, compiled.
pub struct SigmaRule {
    pub title: String,
    pub id: String,
    /// What correlations refer to it by (besides its id).
    pub name: String,
    pub level: String,
    pub tags: Vec<String>,
    pub node: Result<Node, Unsupported>,
}

use crate::yaml_text as text;

/// Merges `over` into `base`, mappings key by key (Sigma's `action: global`).
fn merge(base: &Yaml, over: &Yaml) -> Yaml {
    match (base, over) {
        (Yaml::Mapping(b), Yaml::Mapping(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match out.get(k) {
                    Some(old) => merge(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Yaml::Mapping(out)
        }
        (_, o) => o.clone(),
    }
}

/// The rules and correlations of a (possibly multi-document) Sigma file.
pub fn load(docs: &[Yaml]) -> (Vec<SigmaRule>, Vec<SigmaCorrelation>) {
    let mut global: Option<Yaml> = None;
    let mut out = Vec::new();
    let mut correlations = Vec::new();
    for doc in docs {
        let Yaml::Mapping(m) = doc else { continue };
        match m.get("action").and_then(text).as_deref() {
            Some("global") => {
                let mut g = m.clone();
                g.remove("action");
                global = Some(Yaml::Mapping(g));
                continue;
            }
            Some("reset") => {
                global = None;
                continue;
            }
            _ => {}
        }
        let doc = match &global {
            Some(g) => merge(g, doc),
            None => doc.clone(),
        };
        let Yaml::Mapping(m) = &doc else { continue };
        if m.contains_key("correlation") {
            correlations.push(correlation::parse(m));
        } else {
            out.push(rule(m));
        }
    }
    (out, correlations)
}

fn rule(m: &Mapping) -> SigmaRule {
    let s = |k: &str| m.get(k).and_then(text).unwrap_or_default();
    let tags = match m.get("tags") {
        Some(Yaml::Sequence(t)) => t.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    SigmaRule { title: s("title"), id: s("id"), name: s("name"), level: s("level"), tags, node: compile(m) }
}

fn compile(m: &Mapping) -> Result<Node, Unsupported> {
    let Some(Yaml::Mapping(ls)) = m.get("logsource") else {
        return Err(Unsupported::Invalid("no logsource".into()));
    };
    let ls_get = |k: &str| ls.get(k).and_then(text).map(|s| s.to_lowercase());
    let category = ls_get("category");
    let product = ls_get("product");
    if category.as_deref() != Some("process_creation") || !matches!(product.as_deref(), None | Some("linux")) {
        let mut what: Vec<String> = Vec::new();
        for k in ["product", "category", "service"] {
            if let Some(v) = ls_get(k) {
                what.push(format!("{k}: {v}"));
            }
        }
        return Err(Unsupported::Field(format!(
            "logsource {{{}}}: Vigil evaluates Sigma's process_creation on Linux only",
            what.join(", ")
        )));
    }
    let Some(Yaml::Mapping(det)) = m.get("detection") else {
        return Err(Unsupported::Invalid("no detection".into()));
    };
    let mut searches: Vec<(String, Node)> = Vec::new();
    for (k, v) in det {
        let Some(name) = text(k) else { continue };
        if name == "condition" || name == "timeframe" {
            continue;
        }
        searches.push((name, search(v)?));
    }
    let conditions: Vec<String> = match det.get("condition") {
        Some(Yaml::Sequence(cs)) => cs.iter().filter_map(text).collect(),
        Some(c) => text(c).into_iter().collect(),
        None => return Err(Unsupported::Invalid("detection has no condition".into())),
    };
    let mut parts = Vec::new();
    for c in &conditions {
        parts.push(Cond { s: c.as_bytes(), text: c, i: 0, depth: 0, searches: &mut searches }.parse()?);
    }
    Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Node::Or(parts) })
}

/// A field of Sigma's `process_creation` taxonomy, or, as Vigil's extension,
/// a Falco field (dotted: `proc.name`, `container.id`), for what Sigma has no
/// name for.
pub(crate) fn sigma_field(name: &str) -> Result<Field, Unsupported> {
    Field::sigma(name)
        .or_else(|e| if name.contains('.') { Field::falco(name, None).map_err(|_| e) } else { Err(e) })
        .map_err(Unsupported::Field)
}

/// One search identifier's value: a map (AND), a list of maps (OR), or keywords.
fn search(v: &Yaml) -> Result<Node, Unsupported> {
    match v {
        Yaml::Mapping(m) => {
            let mut parts = Vec::new();
            for (k, v) in m {
                let key = text(k).ok_or_else(|| Unsupported::Invalid("a detection key must be a string".into()))?;
                parts.push(field_match(&key, v)?);
            }
            Ok(Node::And(parts))
        }
        Yaml::Sequence(items) if items.iter().all(|i| matches!(i, Yaml::Mapping(_))) => {
            Ok(Node::Or(items.iter().map(search).collect::<Result<_, _>>()?))
        }
        Yaml::Sequence(_) | Yaml::String(_) => {
            // Keywords: anywhere in the event; for process creation, the command line.
            field_match("CommandLine|contains", v)
        }
        _ => Err(Unsupported::Invalid("a search must be a map, a list of maps or keywords".into())),
    }
}

fn field_match(key: &str, v: &Yaml) -> Result<Node, Unsupported> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    let field = sigma_field(name)?;
    let mut how = "equals";
    let (mut all, mut re, mut cased, mut windash, mut exists) = (false, None::<String>, false, false, false);
    let mut num: Option<NumOp> = None;
    for m in parts {
        match m {
            "contains" | "startswith" | "endswith" => how = m,
            "all" => all = true,
            "re" => re = Some(String::new()),
            "i" | "m" | "s" if re.is_some() => re.as_mut().unwrap().push_str(m),
            "cased" => cased = true,
            "windash" => windash = true,
            "exists" => exists = true,
            "lt" => num = Some(NumOp::Lt),
            "lte" => num = Some(NumOp::Le),
            "gt" => num = Some(NumOp::Gt),
            "gte" => num = Some(NumOp::Ge),
            other => return Err(Unsupported::Field(format!("modifier |{other} is not supported"))),
        }
    }
    let values: Vec<Option<String>> = match v {
        Yaml::Sequence(items) => items.iter().map(text).collect(),
        Yaml::Null => vec![None],
        other => vec![text(other)],
    };
    let check = |op: Op, fold_case: bool| {
        Node::Check(Box::new(Check { field: field.clone(), transforms: vec![], fold_case, op }))
    };
    if exists {
        let want = values.first().cloned().flatten().is_none_or(|v| v == "true");
        let node = check(Op::Exists, false);
        return Ok(if want { node } else { Node::Not(Box::new(node)) });
    }
    let mut alternatives = Vec::new();
    for value in values {
        let Some(value) = value else {
            // null: the field is missing or empty.
            alternatives.push(Node::Not(Box::new(check(Op::Exists, false))));
            continue;
        };
        let variants = if windash { windash_variants(&value) } else { vec![value] };
        let mut nodes = Vec::new();
        for v in variants {
            nodes.push(if let Some(op) = num {
                let n = v.parse::<i64>().map_err(|_| Unsupported::Invalid(format!("{v:?} is not a number")))?;
                check(Op::Num(op, n), false)
            } else if let Some(flags) = &re {
                let pattern = if flags.is_empty() { v.clone() } else { format!("(?{flags}){v}") };
                check(Op::Regex(vec![regex_limited(&pattern).map_err(Unsupported::Invalid)?]), false)
            } else {
                plain(&v, how, cased, &check)?
            });
        }
        alternatives.push(if nodes.len() == 1 { nodes.pop().unwrap() } else { Node::Or(nodes) });
    }
    if alternatives.is_empty() {
        return Err(Unsupported::Invalid(format!("{key} has no value to match")));
    }
    if all {
        return Ok(Node::And(alternatives));
    }
    Ok(fold_alternatives(alternatives))
}

/// Folds an OR of single-needle checks on one field into one check with
/// many needles (an automaton), the common shape of Sigma's value lists.
fn fold_alternatives(alternatives: Vec<Node>) -> Node {
    if alternatives.len() == 1 {
        return alternatives.into_iter().next().unwrap();
    }
    let mut contains: Vec<String> = Vec::new();
    let mut starts: Vec<String> = Vec::new();
    let mut ends: Vec<String> = Vec::new();
    let mut eqs: Vec<String> = Vec::new();
    let mut template: Option<(Field, bool)> = None;
    let mut rest = Vec::new();
    for n in alternatives {
        match n {
            Node::Check(c) if template.as_ref().is_none_or(|t| *t == (c.field.clone(), c.fold_case)) => {
                let key = (c.field.clone(), c.fold_case);
                match c.op {
                    Op::Contains(Needles::Few(ns, _)) => contains.extend(ns),
                    Op::StartsWith(ps) => starts.extend(ps),
                    Op::EndsWith(ps) => ends.extend(ps),
                    Op::Eq(s) => eqs.push(s),
                    op => {
                        rest.push(Node::Check(Box::new(Check { op, ..*c })));
                        continue;
                    }
                }
                template = Some(key);
            }
            other => rest.push(other),
        }
    }
    if let Some((field, fold_case)) = template {
        let mk = |op| Node::Check(Box::new(Check { field: field.clone(), transforms: vec![], fold_case, op }));
        if !contains.is_empty() {
            rest.push(mk(Op::Contains(Needles::new(contains))));
        }
        if !starts.is_empty() {
            rest.push(mk(Op::StartsWith(starts)));
        }
        if !ends.is_empty() {
            rest.push(mk(Op::EndsWith(ends)));
        }
        if !eqs.is_empty() {
            rest.push(mk(Op::In(Set::new(eqs))));
        }
    }
    if rest.len() == 1 { rest.pop().unwrap() } else { Node::Or(rest) }
}

/// A plain value: wildcards `*`/`?` (escaped with `\`), case-insensitive unless `cased`.
fn plain(v: &str, how: &str, cased: bool, check: &dyn Fn(Op, bool) -> Node) -> Result<Node, Unsupported> {
    let mut literal = String::new();
    let mut glob = String::new();
    let mut wild = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                let n = chars.next().unwrap();
                literal.push(n);
                glob.push('\\');
                glob.push(n);
            }
            '*' | '?' => {
                wild = true;
                glob.push(c);
            }
            '[' | ']' => {
                literal.push(c);
                glob.push('\\');
                glob.push(c);
            }
            '\\' => {
                // A backslash before anything else is itself.
                literal.push(c);
                glob.push_str("\\\\");
            }
            c => {
                literal.push(c);
                glob.push(c);
            }
        }
    }
    let fold = !cased;
    let lit = if fold { literal.to_lowercase() } else { literal };
    if wild {
        let pattern = match how {
            "contains" => format!("*{glob}*"),
            "startswith" => format!("{glob}*"),
            "endswith" => format!("*{glob}"),
            _ => glob,
        };
        return Ok(check(Op::Regex(vec![glob_regex(&pattern, fold).map_err(Unsupported::Invalid)?]), false));
    }
    Ok(match how {
        "contains" => check(Op::Contains(Needles::new(vec![lit])), fold),
        "startswith" => check(Op::StartsWith(vec![lit]), fold),
        "endswith" => check(Op::EndsWith(vec![lit]), fold),
        _ => check(Op::Eq(lit), fold),
    })
}

/// Sigma's `windash`: a dash starting an option may also be written `/`,
/// an en dash, an em dash or a horizontal bar.
fn windash_variants(v: &str) -> Vec<String> {
    let mut out = vec![v.to_string()];
    for alt in ['/', '\u{2013}', '\u{2014}', '\u{2015}'] {
        let mut s = String::with_capacity(v.len());
        let mut prev_space = true;
        for c in v.chars() {
            s.push(if c == '-' && prev_space { alt } else { c });
            prev_space = c.is_whitespace();
        }
        if s != v {
            out.push(s);
        }
    }
    out
}

/// Sigma's condition: `and`, `or`, `not`, parentheses, search names,
/// `1 of x*`, `all of x*`, `1 of them`, `all of them`.
struct Cond<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
    searches: &'a mut Vec<(String, Node)>,
}

impl Cond<'_> {
    fn err(&self, what: &str) -> Unsupported {
        Unsupported::Invalid(format!("condition {:?}: {what}", self.text))
    }

    fn word(&mut self) -> Option<String> {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return None;
        }
        let c = self.s[self.i];
        if matches!(c, b'(' | b')' | b'|') {
            self.i += 1;
            return Some((c as char).to_string());
        }
        let start = self.i;
        while self.i < self.s.len()
            && !self.s[self.i].is_ascii_whitespace()
            && !matches!(self.s[self.i], b'(' | b')' | b'|')
        {
            self.i += 1;
        }
        Some(self.text[start..self.i].to_string())
    }

    fn peek(&mut self) -> Option<String> {
        let save = self.i;
        let w = self.word();
        self.i = save;
        w
    }

    fn parse(mut self) -> Result<Node, Unsupported> {
        let node = self.or()?;
        match self.word() {
            None => Ok(node),
            Some(w) if w == "|" => Err(Unsupported::Field("aggregations (`| count() ...`) are not supported".into())),
            Some(w) => Err(self.err(&format!("unexpected {w:?}"))),
        }
    }

    fn or(&mut self) -> Result<Node, Unsupported> {
        self.depth += 1;
        if self.depth > 100 {
            return Err(self.err("nested too deep"));
        }
        let mut parts = vec![self.and()?];
        while self.peek().is_some_and(|w| w.eq_ignore_ascii_case("or")) {
            self.word();
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Node::Or(parts) })
    }

    fn and(&mut self) -> Result<Node, Unsupported> {
        let mut parts = vec![self.not()?];
        while self.peek().is_some_and(|w| w.eq_ignore_ascii_case("and")) {
            self.word();
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Node::And(parts) })
    }

    fn not(&mut self) -> Result<Node, Unsupported> {
        if self.peek().is_some_and(|w| w.eq_ignore_ascii_case("not")) {
            self.word();
            self.depth += 1;
            if self.depth > 100 {
                return Err(self.err("nested too deep"));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, Unsupported> {
        let w = self.word().ok_or_else(|| self.err("ends where a search was expected"))?;
        if w == "(" {
            let inner = self.or()?;
            if self.word().as_deref() != Some(")") {
                return Err(self.err("expected ')'"));
            }
            return Ok(inner);
        }
        let quantifier = if w == "1" || w.eq_ignore_ascii_case("any") {
            Some(false)
        } else if w.eq_ignore_ascii_case("all") {
            Some(true)
        } else {
            None
        };
        if let Some(all) = quantifier
            && self.peek().is_some_and(|w| w.eq_ignore_ascii_case("of"))
        {
            self.word();
            let pattern = self.word().ok_or_else(|| self.err("`of` without a pattern"))?;
            let matcher =
                if pattern == "them" { None } else { Some(glob_regex(&pattern, false).map_err(Unsupported::Invalid)?) };
            let picked: Vec<Node> = self
                .searches
                .iter()
                .filter(|(name, _)| match &matcher {
                    None => !name.starts_with('_'),
                    Some(re) => re.is_match(name),
                })
                .map(|(_, n)| n.clone())
                .collect();
            if picked.is_empty() {
                return Err(self.err(&format!("no search matches {pattern:?}")));
            }
            return Ok(if all { Node::And(picked) } else { Node::Or(picked) });
        }
        match self.searches.iter().find(|(name, _)| *name == w) {
            Some((_, n)) => Ok(n.clone()),
            None => Err(self.err(&format!("unknown search {w:?}"))),
        }
    }
}
