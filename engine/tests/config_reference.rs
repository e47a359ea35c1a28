//! `docs/configuration.md` is generated from the config structs' doc
//! comments (`engine/src/config/`) and the defaults of `Config::default()`;
//! this test fails when the page drifts from them, and when a key has no
//! doc comment. Regenerate with
//! `VIGIL_BLESS=1 cargo test --release -p vigil-engine --test config_reference`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use vigil_engine::config::Config;

/// A struct field or enum variant, with its doc comment.
struct Item {
    name: String,
    ty: syn::Type,
    docs: String,
}

/// What the config files define: structs' fields and enums' variants, by name.
#[derive(Default)]
struct Defined {
    structs: BTreeMap<String, (String, Vec<Item>)>,
    enums: BTreeMap<String, Vec<Item>>,
}

fn docs_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if let syn::Meta::NameValue(nv) = &a.meta
            && nv.path.is_ident("doc")
            && let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value
        {
            lines.push(s.value().trim().to_string());
        }
    }
    lines.join(" ").trim().to_string()
}

/// The serde name of `ident` under the enum's `rename_all` (`lowercase` or
/// `kebab-case`, as the config's enums use).
fn serde_name(ident: &syn::Ident, attrs: &[syn::Attribute]) -> String {
    let rename = attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .map(|a| a.to_token_stream().to_string())
        .find(|t| t.contains("rename_all"));
    let name = ident.to_string();
    match rename {
        Some(r) if r.contains("kebab-case") => {
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('-');
                }
                out.extend(c.to_lowercase());
            }
            out
        }
        Some(r) if r.contains("lowercase") => name.to_lowercase(),
        _ => name,
    }
}

fn read_defined() -> Defined {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut defined = Defined::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        let ast = syn::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for item in ast.items {
            match item {
                syn::Item::Struct(s) => {
                    let fields = s
                        .fields
                        .iter()
                        .map(|f| Item {
                            name: f.ident.as_ref().unwrap().to_string(),
                            ty: f.ty.clone(),
                            docs: docs_of(&f.attrs),
                        })
                        .collect();
                    defined.structs.insert(s.ident.to_string(), (docs_of(&s.attrs), fields));
                }
                syn::Item::Enum(e) => {
                    let variants = e
                        .variants
                        .iter()
                        .map(|v| Item {
                            name: serde_name(&v.ident, &e.attrs),
                            ty: syn::parse_quote!(()),
                            docs: docs_of(&v.attrs),
                        })
                        .collect();
                    defined.enums.insert(e.ident.to_string(), variants);
                }
                _ => {}
            }
        }
    }
    defined
}

/// `ty` without `Option<>`, and how it nests: `Vec<T>` is an array of
/// tables, `BTreeMap<String, T>` a table per key.
enum Shape {
    Plain(String),
    List(String),
    Map(String),
}

fn last_ident(ty: &syn::Type) -> Option<(String, Vec<syn::Type>)> {
    let syn::Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let args = match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

fn shape(ty: &syn::Type) -> Shape {
    match last_ident(ty) {
        Some((name, args)) if name == "Option" => shape(&args[0]),
        Some((name, args)) if name == "Vec" => match last_ident(&args[0]) {
            Some((inner, _)) => Shape::List(inner),
            None => Shape::Plain(name),
        },
        Some((name, args)) if name == "BTreeMap" && args.len() == 2 => match last_ident(&args[1]) {
            Some((inner, _)) => Shape::Map(inner),
            None => Shape::Plain(name),
        },
        Some((name, _)) => Shape::Plain(name),
        None => Shape::Plain(ty.to_token_stream().to_string()),
    }
}

/// The TOML type a reader writes, for the table.
fn kind_of(ty: &syn::Type, defined: &Defined) -> String {
    let text = ty.to_token_stream().to_string().replace(' ', "");
    let inner = text.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')).unwrap_or(&text);
    match inner {
        "bool" => "boolean".to_string(),
        "String" => "string".to_string(),
        "PathBuf" => "path".to_string(),
        "Duration" => "duration (\"500us\", \"10ms\", \"5s\", \"10m\")".to_string(),
        "ByteSize" => "size (\"64MiB\")".to_string(),
        "SocketAddr" => "address (\"127.0.0.1:9464\")".to_string(),
        "toml::Value" => "any TOML value".to_string(),
        t if t.starts_with("Vec<") => "list".to_string(),
        t if t.starts_with("BTreeMap<") => "table".to_string(),
        t if ["u8", "u16", "u32", "u64", "usize", "i32", "i64", "f64"].contains(&t) => "number".to_string(),
        t if defined.enums.contains_key(t) => {
            let names: Vec<String> = defined.enums[t].iter().map(|v| format!("`{}`", v.name)).collect();
            format!("one of {}", names.join(", "))
        }
        t => t.to_string(),
    }
}

fn default_text(value: Option<&toml::Value>) -> String {
    match value {
        None => "unset".into(),
        Some(toml::Value::String(s)) if s.is_empty() => "`\"\"`".into(),
        Some(toml::Value::Array(a)) if a.is_empty() => "`[]`".into(),
        Some(v) => format!("`{}`", v.to_string().replace('|', "\\|")),
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Renders the section `section` (TOML header text) of struct `name`.
fn render(
    out: &mut String,
    defined: &Defined,
    missing: &mut Vec<String>,
    section: &str,
    name: &str,
    defaults: Option<&toml::Value>,
    intro: &str,
) {
    let (docs, fields) = &defined.structs[name];
    let mut keys = String::new();
    let mut tables = Vec::new();
    for f in fields {
        let key = if section.is_empty() {
            f.name.clone()
        } else {
            format!("{}.{}", section.trim_matches(['[', ']']), f.name)
        };
        if f.docs.is_empty() {
            missing.push(key.clone());
        }
        let default = defaults.and_then(|d| d.get(&f.name));
        match shape(&f.ty) {
            Shape::Plain(s) if defined.structs.contains_key(&s) => {
                tables.push((format!("[{key}]"), s, default, &f.docs))
            }
            Shape::List(s) if defined.structs.contains_key(&s) => tables.push((format!("[[{key}]]"), s, None, &f.docs)),
            Shape::Map(s) if defined.structs.contains_key(&s) => {
                tables.push((format!("[{key}.<name>]"), s, None, &f.docs))
            }
            _ => {
                let _ = writeln!(
                    keys,
                    "| `{}` | {} | {} | {} |",
                    f.name,
                    kind_of(&f.ty, defined),
                    default_text(default),
                    escape(&f.docs)
                );
                if let Shape::Plain(e) = shape(&f.ty)
                    && let Some(variants) = defined.enums.get(&e)
                {
                    for v in variants.iter().filter(|v| !v.docs.is_empty()) {
                        let _ = writeln!(keys, "| | `{}` | | {} |", v.name, escape(&v.docs));
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "## `{}`\n", if section.is_empty() { "(top level)" } else { section });
    // The field's doc says what the table is for; the struct's, unless it only names the table.
    for text in [intro, docs.as_str()] {
        let names_the_table = text.trim_end_matches('.').trim_matches('`') == section;
        let repeats_the_struct = text == docs && docs == intro;
        if !(text.is_empty() || names_the_table || repeats_the_struct) {
            let _ = writeln!(out, "{text}\n");
        }
    }
    if !keys.is_empty() {
        let _ = writeln!(out, "| key | type | default | what it does |\n|---|---|---|---|\n{keys}");
    }
    for (header, s, d, docs) in tables {
        render(out, defined, missing, &header, &s, d, docs);
    }
}

fn generate() -> (String, Vec<String>) {
    let defined = read_defined();
    let defaults = toml::Value::try_from(Config::default()).expect("the default config serializes");
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the doc comments of engine/src/config/ by engine/tests/config_reference.rs:\n     \
         VIGIL_BLESS=1 cargo test --release -p vigil-engine --test config_reference -->\n\n\
         A TOML file; every key is optional. Unknown keys are errors, and the whole file is validated\n\
         before anything starts (an error names the key). Give it with `vigil run --config FILE` or\n\
         `VIGIL_CONFIG`; SIGHUP re-reads it. How to deploy it: [deploying.md](deploying.md).\n\n\
         Tables are listed in the order the config structs define them; \"unset\" means the key has no\n\
         value unless given (the text says what happens then).\n\n",
    );
    let mut missing = Vec::new();
    render(&mut out, &defined, &mut missing, "", "Config", Some(&defaults), "");
    (out.trim_end().to_string() + "\n", missing)
}

#[test]
fn the_configuration_reference_matches_the_config_structs() {
    let (text, missing) = generate();
    assert!(missing.is_empty(), "config keys without a doc comment: {missing:?}");
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&page, &text).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        current == text,
        "docs/configuration.md is not what the config structs say: regenerate it with\n  \
         VIGIL_BLESS=1 cargo test --release -p vigil-engine --test config_reference"
    );
}

#[test]
fn every_key_of_the_reference_parses() {
    // The defaults as the page shows them are a config the daemon accepts.
    let defaults = toml::to_string(&Config::default()).unwrap();
    let parsed: Config = toml::from_str(&defaults).unwrap_or_else(|e| panic!("{e}\n{defaults}"));
    parsed.validate().unwrap();
}
