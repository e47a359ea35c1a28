//! Per-kind evaluation plans: each rule's condition specialised to one
//! event kind (its `evt.type`/`evt.dir` checks folded to constants, nested
//! `and`/`or` flattened, cheap checks moved first), and a prefilter index:
//! a rule whose condition requires `proc.name` to be one of some names, or
//! the executable's base name to be one of some names, is only evaluated
//! for events with such a name. Most rules key on the program, so most are
//! never looked at for a given exec. A rule that instead requires its
//! command line to contain one of some strings is a candidate only when one
//! of them occurs: all such strings of a field are searched at once, by one
//! Aho-Corasick automaton per field (the literal prefilter).

use crate::expr::{Check, Node, Op, Set};
use crate::fields::{EventCtx, Field, Value, kind_field};
use vigil_event::EventKind;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The rules of one event kind, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// (rule index, specialised condition), in load order.
    nodes: Vec<(u32, Node)>,
    /// Positions in `nodes` evaluated for every event.
    always: Vec<u32>,
    by_name: HashMap<String, Vec<u32>>,
    by_base: HashMap<String, Vec<u32>>,
    by_base_folded: HashMap<String, Vec<u32>>,
    /// Literal prefilters, one per (field, case folded).
    literals: Vec<Literals>,
}

/// The strings rules require in one field, and who requires each.
#[derive(Debug, Clone)]
struct Literals {
    field: Field,
    folded: bool,
    needles: Vec<String>,
    /// For each needle, the positions (in `nodes`) of the rules requiring it.
    rules: Vec<Vec<u32>>,
    automaton: Option<aho_corasick::AhoCorasick>,
}

/// What a rule's condition requires of the program, if anything.
enum Key {
    Names(Vec<String>),
    Bases {
        names: Vec<String>,
        folded: bool,
    },
    /// One of `needles` must occur in `field`.
    Literals {
        field: Field,
        folded: bool,
        needles: Vec<String>,
    },
}

impl Plan {
    /// Adds rule `rule` with its condition specialised to this plan's kind
    /// ([`specialize`]; the caller leaves out kinds it is `false` for).
    pub fn add(&mut self, rule: u32, node: Node) {
        let at = self.nodes.len() as u32;
        match key_of(&node) {
            Some(keys) => keys.into_iter().for_each(|k| self.index(at, k)),
            None => self.always.push(at),
        }
        self.nodes.push((rule, node));
    }

    /// Files rule `at` under `key`.
    fn index(&mut self, at: u32, key: Key) {
        match key {
            Key::Names(names) => names.into_iter().for_each(|n| self.by_name.entry(n).or_default().push(at)),
            Key::Bases { names, folded } => {
                let map = if folded { &mut self.by_base_folded } else { &mut self.by_base };
                names.into_iter().for_each(|n| map.entry(n).or_default().push(at));
            }
            Key::Literals { field, folded, needles } => {
                let group = match self.literals.iter().position(|l| l.field == field && l.folded == folded) {
                    Some(i) => i,
                    None => {
                        let l = Literals { field, folded, needles: Vec::new(), rules: Vec::new(), automaton: None };
                        self.literals.push(l);
                        self.literals.len() - 1
                    }
                };
                let group = &mut self.literals[group];
                for n in needles {
                    match group.needles.iter().position(|x| *x == n) {
                        Some(i) => group.rules[i].push(at),
                        None => {
                            group.needles.push(n);
                            group.rules.push(vec![at]);
                        }
                    }
                }
            }
        }
    }

    /// Once every rule is added: checks that several rules make (the same
    /// macro expanded in each) get a slot in the event's memo, so each is
    /// computed once per event. Checks made once stay plain (a memo costs more
    /// than it saves there).
    pub fn finish(&mut self) {
        for l in &mut self.literals {
            l.automaton = aho_corasick::AhoCorasick::new(&l.needles).ok();
            if l.automaton.is_none() {
                // Too big for an automaton: evaluate its rules for every event.
                self.always.extend(l.rules.iter().flatten());
                l.rules.clear();
                l.needles.clear();
            }
        }
        self.literals.retain(|l| l.automaton.is_some());
        let mut counts: HashMap<String, u32> = HashMap::default();
        for (_, node) in &self.nodes {
            count_checks(node, &mut counts);
        }
        let mut shared: HashMap<String, u32> = HashMap::default();
        for (_, node) in &mut self.nodes {
            let taken = std::mem::replace(node, Node::Const(false));
            *node = share(taken, &counts, &mut shared);
        }
    }

    /// How many rules the plan holds, and how many of them are evaluated for every event.
    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.len(), self.always.len())
    }

    /// Rule indexes of the rules evaluated for every event.
    pub fn always(&self) -> Vec<u32> {
        self.always.iter().map(|&at| self.nodes[at as usize].0).collect()
    }

    /// A rule's specialised condition, for reading.
    pub fn node_of(&self, rule: u32) -> Option<&Node> {
        self.nodes.iter().find(|(r, _)| *r == rule).map(|(_, n)| n)
    }

    /// Indexes (into the rule set) of the rules matching the event in `ctx`, in load order.
    /// The candidates are gathered in `out`'s tail (no allocation per event
    /// once `out` has grown), then replaced by the rules that match.
    pub fn matching(&self, ctx: &EventCtx<'_>, out: &mut Vec<u32>) {
        let start = out.len();
        let candidates = out;
        candidates.extend_from_slice(&self.always);
        if !self.by_name.is_empty()
            && let Value::Str(name) = ctx.get(&Field::ProcName)
            && let Some(v) = self.by_name.get(name.as_ref())
        {
            candidates.extend(v);
        }
        if !(self.by_base.is_empty() && self.by_base_folded.is_empty())
            && let Value::Str(exe) = ctx.get(&Field::ProcExePath)
        {
            let base = exe.rsplit('/').next().unwrap_or(&exe);
            if let Some(v) = self.by_base.get(base) {
                candidates.extend(v);
            }
            // The lowercased path is cached for the event; its base name is the lowercased base name.
            if !self.by_base_folded.is_empty()
                && let Value::Str(lower) = ctx.get_lower(&Field::ProcExePath)
                && let Some(v) = self.by_base_folded.get(lower.rsplit('/').next().unwrap_or(&lower))
            {
                candidates.extend(v);
            }
        }
        for l in &self.literals {
            let hay = if l.folded { ctx.get_lower(&l.field) } else { ctx.get(&l.field) };
            let Value::Str(hay) = hay else { continue };
            let Some(ac) = &l.automaton else { continue };
            for m in ac.find_overlapping_iter(hay.as_bytes()) {
                candidates.extend(&l.rules[m.pattern().as_usize()]);
            }
        }
        candidates[start..].sort_unstable();
        let (mut kept, mut previous) = (start, None);
        for i in start..candidates.len() {
            let at = candidates[i];
            if previous == Some(at) {
                continue;
            }
            previous = Some(at);
            let (rule, node) = &self.nodes[at as usize];
            if node.eval(ctx) {
                candidates[kept] = *rule;
                kept += 1;
            }
        }
        candidates.truncate(kept);
    }
}

fn count_checks(node: &Node, counts: &mut HashMap<String, u32>) {
    match node {
        Node::And(parts) | Node::Or(parts) => parts.iter().for_each(|p| count_checks(p, counts)),
        Node::Not(inner) => count_checks(inner, counts),
        Node::Check(c) => *counts.entry(c.key()).or_default() += 1,
        _ => {}
    }
}

fn share(node: Node, counts: &HashMap<String, u32>, shared: &mut HashMap<String, u32>) -> Node {
    match node {
        Node::And(parts) => Node::And(parts.into_iter().map(|p| share(p, counts, shared)).collect()),
        Node::Or(parts) => Node::Or(parts.into_iter().map(|p| share(p, counts, shared)).collect()),
        Node::Not(inner) => Node::Not(Box::new(share(*inner, counts, shared))),
        Node::Check(c) => {
            let key = c.key();
            if counts.get(&key).copied().unwrap_or(0) < 2 {
                return Node::Check(c);
            }
            let next = shared.len() as u32;
            Node::Memo(*shared.entry(key).or_insert(next), c)
        }
        other => other,
    }
}

/// `node` for events of `kind`: kind checks folded, structure flattened,
/// cheaper checks first.
pub fn specialize(node: &Node, kind: EventKind) -> Node {
    match node {
        Node::And(parts) | Node::Or(parts) => {
            let is_and = matches!(node, Node::And(_));
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match specialize(p, kind) {
                    Node::Const(b) if b == is_and => {}
                    Node::Const(b) => return Node::Const(b),
                    Node::And(inner) if is_and => out.extend(inner),
                    Node::Or(inner) if !is_and => out.extend(inner),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Node::Const(is_and),
                1 => out.pop().unwrap(),
                _ => {
                    out.sort_by_key(cost);
                    if is_and { Node::And(out) } else { Node::Or(out) }
                }
            }
        }
        Node::Not(inner) => match specialize(inner, kind) {
            Node::Const(b) => Node::Const(!b),
            Node::Not(double) => *double,
            other => Node::Not(Box::new(other)),
        },
        Node::Check(c)
            if matches!(c.field, Field::EvtType | Field::EvtDir)
                && c.transforms.is_empty()
                && !matches!(c.op, Op::EqField(_) | Op::NeField(_)) =>
        {
            Node::Const(c.eval_value(kind_field(&c.field, Some(kind)), None))
        }
        other => other.clone(),
    }
}

/// A rough cost of evaluating `node`, to order `and`/`or` operands.
fn cost(node: &Node) -> u32 {
    match node {
        Node::Const(_) => 0,
        Node::Not(n) => cost(n),
        Node::And(ns) | Node::Or(ns) => ns.iter().map(cost).sum::<u32>() + 1,
        Node::Check(c) | Node::Memo(_, c) => check_cost(c),
    }
}

fn check_cost(c: &Check) -> u32 {
    let field = match &c.field {
        Field::AName(None) | Field::APid(None) | Field::AExe(None) | Field::AExePath(None) | Field::ACmdline(_) => 8,
        Field::ContainerLabels | Field::PodLabels => 8,
        Field::ProcCmdline | Field::ProcArgs | Field::ArgvLine | Field::ParentArgvLine => 3,
        _ => 1,
    };
    let transforms = 4 * c.transforms.len() as u32 + if c.fold_case { 2 } else { 0 };
    let op = match &c.op {
        Op::Exists | Op::Eq(_) | Op::Ne(_) | Op::Num(..) => 1,
        Op::In(_) | Op::Intersects(_) | Op::StartsWith(_) | Op::EndsWith(_) | Op::PMatch(_) => 2,
        Op::Contains(_) | Op::EqField(_) | Op::NeField(_) => 4,
        Op::Regex(_) => 12,
    };
    field + transforms + op
}

/// What a condition requires, as alternatives: the rule can only match an
/// event for which one of the keys holds. `None`: nothing usable (evaluate
/// the rule for every event).
fn key_of(node: &Node) -> Option<Vec<Key>> {
    match node {
        Node::Check(c) => atom_key(c).map(|k| vec![k]),
        // One conjunct's keys suffice; the cheapest such conjunct comes first.
        Node::And(parts) => parts.iter().find_map(key_of),
        // Every alternative needs keys.
        Node::Or(parts) => {
            let mut all = Vec::new();
            for p in parts {
                all.extend(key_of(p)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// The key one check gives: the program's name or base name, else strings
/// that must occur in a single-valued text field.
fn atom_key(c: &Check) -> Option<Key> {
    if !c.transforms.is_empty() {
        return None;
    }
    match (&c.field, &c.op, c.fold_case) {
        (Field::ProcName | Field::AName(Some(0)), Op::Eq(v), false) => return Some(Key::Names(vec![v.clone()])),
        (Field::ProcName | Field::AName(Some(0)), Op::In(set), false) => return Some(Key::Names(set.values())),
        (Field::ProcExePath, Op::EndsWith(suffixes), folded)
            if !suffixes.is_empty()
                && suffixes.iter().all(|s| s.len() > 1 && s.starts_with('/') && !s[1..].contains('/')) =>
        {
            return Some(Key::Bases { names: suffixes.iter().map(|s| s[1..].to_string()).collect(), folded });
        }
        _ => {}
    }
    if !text_field(&c.field) {
        return None;
    }
    let needles: Vec<String> = match &c.op {
        Op::Contains(n) => n.needles().to_vec(),
        Op::StartsWith(v) | Op::EndsWith(v) | Op::PMatch(v) => v.clone(),
        Op::Eq(v) => vec![v.clone()],
        Op::In(set) => set.values(),
        _ => return None,
    };
    if needles.is_empty() || needles.iter().any(String::is_empty) {
        return None;
    }
    Some(Key::Literals { field: c.field.clone(), folded: c.fold_case, needles })
}

/// Fields whose value is one string (so a needle either occurs in it or not).
fn text_field(f: &Field) -> bool {
    matches!(
        f,
        Field::ProcName
            | Field::ProcExe
            | Field::ProcExePath
            | Field::ProcCmdline
            | Field::ProcArgs
            | Field::ProcCwd
            | Field::ArgvLine
            | Field::ParentArgvLine
            | Field::AName(Some(_))
            | Field::AExe(Some(_))
            | Field::AExePath(Some(_))
            | Field::ACmdline(Some(_))
            | Field::ContainerName
            | Field::ContainerImage
            | Field::ImageRepository
    )
}

impl Set {
    /// The set's values.
    pub fn values(&self) -> Vec<String> {
        match self {
            Set::Few(v) => v.clone(),
            Set::Many(v) => v.iter().cloned().collect(),
        }
    }
}
