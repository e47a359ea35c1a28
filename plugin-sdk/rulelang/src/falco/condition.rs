//! Falco's condition language, parsed into a syntax tree whose macro and
//! list names are still unresolved (they are resolved when a rule is
//! compiled, so a macro may be defined after the rule that uses it).
//!
//! Grammar (precedence: `not` over `and` over `or`):
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" expr ")" | operand op rhs | operand "exists" | macro-name
//! operand := field ("[" arg "]")? | transformer "(" operand ")"
//! rhs     := value | "(" [value ("," value)*] ")" | "val(" operand ")"
//! ```

/// Longest condition text parsed (after macro text is appended).
pub const MAX_CONDITION: usize = 256 * 1024;
/// Deepest nesting of parentheses and `not`.
const MAX_DEPTH: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Not(Box<Ast>),
    Macro(String),
    Check(CheckAst),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    /// Outermost first: `tolower(basename(proc.exepath))` is `[tolower, basename]`.
    pub transforms: Vec<String>,
    pub field: String,
    pub arg: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    /// Quoted words are never list names.
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    None,
    One(Word),
    List(Vec<Word>),
    Field(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckAst {
    pub lhs: Operand,
    /// Lowercased operator (`=`, `contains`, `in`, ...).
    pub op: String,
    pub rhs: Rhs,
}

const TRANSFORMERS: &[&str] = &["tolower", "toupper", "b64", "basename", "len", "val"];
const WORD_OPS: &[&str] = &[
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "istartswith",
    "bstartswith",
    "endswith",
    "iendswith",
    "glob",
    "iglob",
    "pmatch",
    "in",
    "intersects",
    "exists",
    "regex",
];

/// Parses a condition.
pub fn parse(text: &str) -> Result<Ast, String> {
    if text.len() > MAX_CONDITION {
        return Err(format!("condition longer than {MAX_CONDITION} bytes"));
    }
    let mut p = Parser { s: text.as_bytes(), text, i: 0, depth: 0 };
    let ast = p.expr()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.error("unexpected text"));
    }
    Ok(ast)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'
}

fn is_bare(c: u8) -> bool {
    !(c.is_ascii_whitespace() || matches!(c, b'(' | b')' | b',' | b'"' | b'\'' | b'='))
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> String {
        let start = self.i.min(self.text.len());
        let mut end = (start + 30).min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let mut s = start;
        while !self.text.is_char_boundary(s) {
            s -= 1;
        }
        format!("{what} at offset {start}: {:?}", &self.text[s..end])
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    /// Consumes `kw` if it is the next whole word.
    fn keyword(&mut self, kw: &str) -> bool {
        self.ws();
        let end = self.i + kw.len();
        if end <= self.s.len()
            && self.s[self.i..end].eq_ignore_ascii_case(kw.as_bytes())
            && self.s.get(end).is_none_or(|c| !is_ident(*c))
        {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(self.error("nesting too deep")) } else { Ok(()) }
    }

    fn expr(&mut self) -> Result<Ast, String> {
        self.enter()?;
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Ast::Or(parts) })
    }

    fn and(&mut self) -> Result<Ast, String> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Ast::And(parts) })
    }

    fn unary(&mut self) -> Result<Ast, String> {
        if self.keyword("not") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Ast, String> {
        match self.peek() {
            None => Err(self.error("condition ends where a check was expected")),
            Some(b'(') => {
                self.i += 1;
                let inner = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(self.error("expected ')'"));
                }
                self.i += 1;
                Ok(inner)
            }
            Some(c) if is_ident_start(c) => {
                let start = self.i;
                let name = self.ident();
                let next = self.s.get(self.i).copied();
                let is_field = name.contains('.') || next == Some(b'[');
                let is_transform = TRANSFORMERS.contains(&name.as_str()) && self.peek() == Some(b'(');
                if !is_field && !is_transform {
                    // A macro, unless an operator follows (a field without a dot is not Falco's).
                    let save = self.i;
                    if self.operator().is_some() {
                        self.i = start;
                        return Err(self.error(&format!("{name:?} is not a field")));
                    }
                    self.i = save;
                    return Ok(Ast::Macro(name));
                }
                self.i = start;
                let lhs = self.operand()?;
                let op = self.operator().ok_or_else(|| self.error("expected an operator"))?;
                let rhs = match op.as_str() {
                    "exists" => Rhs::None,
                    "in" | "intersects" | "pmatch" => {
                        if self.peek() == Some(b'(') {
                            Rhs::List(self.list()?)
                        } else {
                            // `in list_name`, as some rule files write it.
                            Rhs::List(vec![self.word()?])
                        }
                    }
                    _ => {
                        let save = self.i;
                        if self.keyword("val") && self.peek() == Some(b'(') {
                            self.i += 1;
                            let f = self.operand()?;
                            if self.peek() != Some(b')') {
                                return Err(self.error("expected ')' after val(field"));
                            }
                            self.i += 1;
                            Rhs::Field(f)
                        } else {
                            self.i = save;
                            Rhs::One(self.word()?)
                        }
                    }
                };
                Ok(Ast::Check(CheckAst { lhs, op, rhs }))
            }
            Some(_) => Err(self.error("expected a check, a macro or '('")),
        }
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && is_ident(self.s[self.i]) {
            self.i += 1;
        }
        self.text[start..self.i].to_string()
    }

    fn operand(&mut self) -> Result<Operand, String> {
        self.enter()?;
        let name = self.ident();
        if name.is_empty() {
            return Err(self.error("expected a field"));
        }
        let out = if TRANSFORMERS.contains(&name.as_str()) && self.peek() == Some(b'(') {
            self.i += 1;
            let mut inner = self.operand()?;
            if self.peek() != Some(b')') {
                return Err(self.error("expected ')' after a transformer's field"));
            }
            self.i += 1;
            inner.transforms.insert(0, name);
            inner
        } else {
            let arg = if self.s.get(self.i) == Some(&b'[') {
                let close = self.text[self.i..].find(']').ok_or_else(|| self.error("unclosed '['"))?;
                let arg = self.text[self.i + 1..self.i + close].to_string();
                self.i += close + 1;
                Some(arg)
            } else {
                None
            };
            Operand { transforms: Vec::new(), field: name, arg }
        };
        self.depth -= 1;
        Ok(out)
    }

    fn operator(&mut self) -> Option<String> {
        self.ws();
        let rest = &self.s[self.i..];
        for sym in ["==", "!=", "<=", ">=", "=", "<", ">"] {
            if rest.starts_with(sym.as_bytes()) {
                self.i += sym.len();
                return Some(if sym == "==" { "=".into() } else { sym.into() });
            }
        }
        for op in WORD_OPS {
            if self.keyword(op) {
                return Some((*op).to_string());
            }
        }
        None
    }

    fn list(&mut self) -> Result<Vec<Word>, String> {
        self.i += 1; // '('
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Some(b')') => {
                    self.i += 1;
                    return Ok(items);
                }
                Some(b',') => self.i += 1,
                None => return Err(self.error("unclosed list")),
                Some(_) => items.push(self.word()?),
            }
        }
    }

    fn word(&mut self) -> Result<Word, String> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.i += 1;
                let mut out = Vec::new();
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    if c == q {
                        let text = String::from_utf8(out).map_err(|_| self.error("invalid UTF-8"))?;
                        return Ok(Word { text, quoted: true });
                    }
                    if c == b'\\' {
                        if let Some(&n) = self.s.get(self.i) {
                            self.i += 1;
                            match n {
                                b'n' => out.push(b'\n'),
                                b't' => out.push(b'\t'),
                                b'"' | b'\'' | b'\\' => out.push(n),
                                other => {
                                    out.push(b'\\');
                                    out.push(other);
                                }
                            }
                        }
                        continue;
                    }
                    out.push(c);
                }
                Err(self.error("unclosed quoted string"))
            }
            Some(c) if is_bare(c) => {
                let start = self.i;
                while self.i < self.s.len() && is_bare(self.s[self.i]) {
                    self.i += 1;
                }
                Ok(Word { text: self.text[start..self.i].to_string(), quoted: false })
            }
            _ => Err(self.error("expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &str, op: &str, rhs: Rhs) -> Ast {
        Ast::Check(CheckAst { lhs: Operand { transforms: vec![], field: field.into(), arg: None }, op: op.into(), rhs })
    }
    fn w(s: &str) -> Word {
        Word { text: s.into(), quoted: false }
    }

    #[test]
    fn precedence_and_macros() {
        let ast = parse("spawned_process and not proc.name in (a, b) or evt.dir=<").unwrap();
        assert_eq!(
            ast,
            Ast::Or(vec![
                Ast::And(vec![
                    Ast::Macro("spawned_process".into()),
                    Ast::Not(Box::new(check("proc.name", "in", Rhs::List(vec![w("a"), w("b")])))),
                ]),
                check("evt.dir", "=", Rhs::One(w("<"))),
            ])
        );
    }

    #[test]
    fn operands_values_and_transformers() {
        let ast = parse(r#"tolower(proc.aname[2]) startswith "/usr/ bin" and proc.pid != val(proc.ppid)"#).unwrap();
        let Ast::And(parts) = ast else { panic!() };
        let Ast::Check(c) = &parts[0] else { panic!() };
        assert_eq!(c.lhs.transforms, vec!["tolower"]);
        assert_eq!(c.lhs.arg.as_deref(), Some("2"));
        assert_eq!(c.rhs, Rhs::One(Word { text: "/usr/ bin".into(), quoted: true }));
        let Ast::Check(c) = &parts[1] else { panic!() };
        assert!(matches!(&c.rhs, Rhs::Field(f) if f.field == "proc.ppid"));
        assert!(parse("container.label[io.k8s/name] exists").is_ok());
        assert!(parse("proc.name=bash and").is_err());
        assert!(parse("(proc.name=bash").is_err());
        assert!(parse("proc.name in (a, 'b c'").is_err());
        assert!(parse("proc.cmdline contains \"unclosed").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}proc.pid=1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).unwrap_err().contains("too deep"));
        let nots = format!("{}proc.pid=1", "not ".repeat(10_000));
        assert!(parse(&nots).unwrap_err().contains("too deep"));
    }
}
