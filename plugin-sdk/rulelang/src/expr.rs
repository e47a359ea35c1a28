//! The evaluation form both dialects compile to: a tree of checks over
//! fields, built once per load. Lists are expanded and interned into sets,
//! regular expressions and globs compiled, many needles of one field folded
//! into one Aho-Corasick automaton, and constants pre-lowercased for the
//! case-insensitive operators.

/// Fx-hashed sets: fast for short strings, and without std's random seed
/// (which a rule would ask the host for). The sets hold a rule file's
/// values; events only look values up, so a fixed hash gives no one a way
/// to slow them.
type HashSet<T> = rustc_hash::FxHashSet<T>;

use aho_corasick::AhoCorasick;
use regex::Regex;

use crate::fields::{EventCtx, Field, Value};

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Check(Box<Check>),
    Const(bool),
    /// A check shared by several rules (macros expand to the same checks):
    /// its result is computed once per event, in slot `.0` of the event's memo.
    Memo(u32, Box<Check>),
}

/// How a field's value is changed before it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Lower,
    Upper,
    Basename,
    Len,
    B64,
}

/// One comparison: `field op operand`.
#[derive(Debug, Clone)]
pub struct Check {
    pub field: Field,
    pub transforms: Vec<Transform>,
    /// Compare the lowercased value (case-insensitive operators).
    pub fold_case: bool,
    pub op: Op,
}

/// The comparison, with its operand compiled.
#[derive(Debug, Clone)]
pub enum Op {
    Exists,
    Eq(String),
    Ne(String),
    Num(NumOp, i64),
    /// `in (...)`: one of the values.
    In(Set),
    /// `intersects (...)`: some value of a multi-valued field is in the set.
    Intersects(Set),
    Contains(Needles),
    StartsWith(Vec<String>),
    EndsWith(Vec<String>),
    /// Path prefix: equal to, or under, one of the paths.
    PMatch(Vec<String>),
    /// Matches one of the patterns (globs are compiled to anchored regexes).
    Regex(Vec<Regex>),
    /// Compared with another field of the same event.
    EqField(Field),
    NeField(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Values of `in`: a hash set once the list is long enough to pay for it.
#[derive(Debug, Clone)]
pub enum Set {
    Few(Vec<String>),
    Many(HashSet<String>),
}

impl Set {
    pub fn new(values: Vec<String>) -> Set {
        if values.len() > 8 { Set::Many(values.into_iter().collect()) } else { Set::Few(values) }
    }
    fn contains(&self, v: &str) -> bool {
        match self {
            Set::Few(vs) => vs.iter().any(|x| x == v),
            Set::Many(vs) => vs.contains(v),
        }
    }
}

/// Substrings to look for: one, a few, or an automaton for many.
#[derive(Debug, Clone)]
pub enum Needles {
    /// The needles, and a searcher built once for each.
    Few(Vec<String>, Vec<memchr::memmem::Finder<'static>>),
    /// The automaton, and its needles (what the check is, for sharing it).
    Many(AhoCorasick, Vec<String>),
}

impl Needles {
    pub fn new(needles: Vec<String>) -> Needles {
        if needles.len() > 4
            && let Ok(ac) = AhoCorasick::new(&needles)
        {
            return Needles::Many(ac, needles);
        }
        let finders = needles.iter().map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned()).collect();
        Needles::Few(needles, finders)
    }
    /// The strings searched for.
    pub fn needles(&self) -> &[String] {
        match self {
            Needles::Few(n, _) | Needles::Many(_, n) => n,
        }
    }

    fn found_in(&self, hay: &str) -> bool {
        match self {
            Needles::Few(_, finders) => finders.iter().any(|f| f.find(hay.as_bytes()).is_some()),
            Needles::Many(ac, _) => ac.is_match(hay),
        }
    }
}

impl Node {
    /// Evaluates the condition over one event.
    pub fn eval(&self, ctx: &EventCtx<'_>) -> bool {
        match self {
            Node::And(nodes) => nodes.iter().all(|n| n.eval(ctx)),
            Node::Or(nodes) => nodes.iter().any(|n| n.eval(ctx)),
            Node::Not(n) => !n.eval(ctx),
            Node::Check(c) => c.eval(ctx),
            Node::Const(b) => *b,
            Node::Memo(slot, c) => ctx.memo(*slot, || c.eval(ctx)),
        }
    }
}

impl Check {
    /// What the check is, as text: equal keys are the same check.
    pub fn key(&self) -> String {
        let op = match &self.op {
            Op::Exists => "exists".to_string(),
            Op::Eq(s) => format!("= {s:?}"),
            Op::Ne(s) => format!("!= {s:?}"),
            Op::Num(op, n) => format!("{op:?} {n}"),
            Op::In(set) => format!("in {:?}", sorted(set.values())),
            Op::Intersects(set) => format!("intersects {:?}", sorted(set.values())),
            Op::Contains(Needles::Few(n, _)) | Op::Contains(Needles::Many(_, n)) => format!("contains {n:?}"),
            Op::StartsWith(v) => format!("startswith {v:?}"),
            Op::EndsWith(v) => format!("endswith {v:?}"),
            Op::PMatch(v) => format!("pmatch {v:?}"),
            Op::Regex(res) => format!("regex {:?}", res.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
            Op::EqField(f) => format!("= val({f:?})"),
            Op::NeField(f) => format!("!= val({f:?})"),
        };
        format!("{:?} {:?} {} {op}", self.field, self.transforms, self.fold_case)
    }

    fn eval(&self, ctx: &EventCtx<'_>) -> bool {
        let value = if self.fold_case && self.transforms.is_empty() {
            ctx.get_lower(&self.field)
        } else {
            let mut v = ctx.get(&self.field);
            for t in &self.transforms {
                v = transform(v, *t);
            }
            if self.fold_case { v.lowercase() } else { v }
        };
        self.eval_value(value, Some(ctx))
    }

    pub(crate) fn eval_value(&self, value: Value<'_>, ctx: Option<&EventCtx<'_>>) -> bool {
        match (&self.op, value) {
            (Op::Exists, v) => !matches!(v, Value::Missing),
            (_, Value::Missing) => false,
            (Op::EqField(other), v) => {
                let o = ctx.map_or(Value::Missing, |c| c.get(other));
                !matches!(o, Value::Missing) && v.render() == o.render()
            }
            (Op::NeField(other), v) => {
                let o = ctx.map_or(Value::Missing, |c| c.get(other));
                !matches!(o, Value::Missing) && v.render() != o.render()
            }
            (Op::Intersects(set), Value::Many(vs)) => vs.iter().any(|v| set.contains(v)),
            (op, Value::Many(vs)) => vs.iter().any(|v| self.compare_str(op, v)),
            (Op::Num(op, n), Value::Num(v)) => compare_num(*op, v, *n),
            (op, Value::Num(v)) => self.compare_str(op, itoa::Buffer::new().format(v)),
            (op, Value::Bool(b)) => self.compare_str(op, if b { "true" } else { "false" }),
            (op, Value::Str(s)) => self.compare_str(op, &s),
        }
    }

    fn compare_str(&self, op: &Op, v: &str) -> bool {
        match op {
            Op::Exists => true,
            Op::Eq(s) => v == s,
            Op::Ne(s) => v != s,
            Op::Num(op, n) => v.parse::<i64>().is_ok_and(|v| compare_num(*op, v, *n)),
            Op::In(set) | Op::Intersects(set) => set.contains(v),
            Op::Contains(needles) => needles.found_in(v),
            Op::StartsWith(ps) => ps.iter().any(|p| v.starts_with(p.as_str())),
            Op::EndsWith(ps) => ps.iter().any(|p| v.ends_with(p.as_str())),
            Op::PMatch(paths) => paths.iter().any(|p| {
                v.starts_with(p.as_str())
                    && (v.len() == p.len() || p.ends_with('/') || v.as_bytes().get(p.len()) == Some(&b'/'))
            }),
            Op::Regex(res) => res.iter().any(|re| re.is_match(v)),
            Op::EqField(_) | Op::NeField(_) => false,
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn compare_num(op: NumOp, v: i64, n: i64) -> bool {
    match op {
        NumOp::Eq => v == n,
        NumOp::Ne => v != n,
        NumOp::Lt => v < n,
        NumOp::Le => v <= n,
        NumOp::Gt => v > n,
        NumOp::Ge => v >= n,
    }
}

fn transform(v: Value<'_>, t: Transform) -> Value<'_> {
    let each = |s: &str| -> Value<'static> {
        match t {
            Transform::Lower => Value::Str(s.to_lowercase().into()),
            Transform::Upper => Value::Str(s.to_uppercase().into()),
            Transform::Basename => Value::Str(s.rsplit('/').next().unwrap_or(s).to_string().into()),
            Transform::Len => Value::Num(s.len() as i64),
            Transform::B64 => match b64_decode(s) {
                Some(d) => Value::Str(d.into()),
                None => Value::Missing,
            },
        }
    };
    match v {
        Value::Str(s) => each(&s),
        Value::Num(n) => each(&n.to_string()),
        Value::Bool(b) => each(if b { "true" } else { "false" }),
        Value::Many(vs) if t == Transform::Len => Value::Num(vs.len() as i64),
        Value::Many(vs) => Value::Many(
            vs.iter()
                .filter_map(|s| match each(s) {
                    Value::Str(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
        Value::Missing => Value::Missing,
    }
}

/// Standard base64 (with or without padding), as Falco's `b64()` reads it.
fn b64_decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// A glob (`*`, `?`, `[...]`) as an anchored regex.
pub fn glob_regex(glob: &str, case_insensitive: bool) -> Result<Regex, String> {
    let mut re = String::from(if case_insensitive { "(?si)^" } else { "(?s)^" });
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                let mut class = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() {
                        closed = true;
                        break;
                    }
                    class.push(c);
                }
                if closed {
                    let class = class.strip_prefix('!').map(|c| format!("^{c}")).unwrap_or(class);
                    re.push('[');
                    re.push_str(&class.replace('\\', "\\\\").replace('[', "\\["));
                    re.push(']');
                } else {
                    re.push_str(&regex::escape(&format!("[{class}")));
                }
            }
            '\\' if chars.peek().is_some() => re.push_str(&regex::escape(&chars.next().unwrap().to_string())),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex_limited(&re)
}

/// A regex compiled under size limits (a rule file cannot make one huge).
pub fn regex_limited(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| format!("bad regular expression {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = glob_regex("/tmp/*.sh", false).unwrap();
        assert!(g.is_match("/tmp/x.sh") && g.is_match("/tmp/a/b.sh") && !g.is_match("/tmp/x.py"));
        let g = glob_regex("[!a]?c", false).unwrap();
        assert!(g.is_match("xbc") && !g.is_match("abc"));
        assert!(glob_regex("*.SH", true).unwrap().is_match("run.sh"));
    }

    #[test]
    fn base64() {
        assert_eq!(b64_decode("aGVsbG8=").as_deref(), Some("hello"));
        assert_eq!(b64_decode("!!"), None);
    }
}
