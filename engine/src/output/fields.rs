//! Per-output selection of an alert's `output_fields`: exact names, or
//! prefixes ending in `*` (`container.*`). An empty selection keeps all.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct FieldSelection {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl FieldSelection {
    pub fn new(patterns: &[String]) -> Self {
        let mut s = FieldSelection::default();
        for p in patterns {
            match p.strip_suffix('*') {
                Some(prefix) => s.prefixes.push(prefix.to_string()),
                None => s.exact.push(p.clone()),
            }
        }
        s
    }

    /// Keeps every field.
    pub fn is_all(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    pub fn keeps(&self, key: &str) -> bool {
        self.is_all()
            || self.exact.iter().any(|e| e == key)
            || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// The selected fields (borrowed from `fields`).
    pub fn apply<'a>(&self, fields: &'a BTreeMap<String, Value>) -> BTreeMap<&'a str, &'a Value> {
        fields.iter().filter(|(k, _)| self.keeps(k)).map(|(k, v)| (k.as_str(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let s = FieldSelection::new(&["proc.name".into(), "container.*".into()]);
        assert!(s.keeps("proc.name"));
        assert!(!s.keeps("proc.cmdline"));
        assert!(s.keeps("container.id"));
        assert!(s.keeps("container.image.digest"));
        assert!(FieldSelection::new(&[]).keeps("anything"));
        let mut f = BTreeMap::new();
        f.insert("proc.name".to_string(), Value::from("sh"));
        f.insert("proc.pid".to_string(), Value::from(1));
        assert_eq!(s.apply(&f).len(), 1);
    }
}
