//! The engine's shape, checked: no import cycles among its modules, no
//! source file longer than the limit, a thin `main.rs`.
//!
//! Each file of `engine/src` is a module (`sources/ebpf/mod.rs` is
//! `sources::ebpf`, `sources/ebpf/read.rs` is `sources::ebpf::read`). A
//! module depends on another when its code names it: a `use` or a path
//! through `crate::`, `super::`, `self::` or a child module's name. Test
//! code (`#[cfg(test)]`) and re-exports (`pub use`) are not dependencies.
//! The binary (`main.rs`, `cli/`) sits on top of the library and is left
//! out of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Longest source file allowed, in lines.
const MAX_LINES: usize = 500;
/// Longest `main.rs` allowed.
const MAX_MAIN_LINES: usize = 150;
/// Longest Rust file elsewhere in the workspace (SDK, rules, tests, benches).
const MAX_LINES_ELSEWHERE: usize = 600;

type Module = Vec<String>;
type Graph = BTreeMap<Module, BTreeSet<Module>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file of `src` is.
fn module_of(rel: &Path) -> Module {
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().contains("test")))
}

/// The paths a file's code names (first segments kept as written).
#[derive(Default)]
struct Named {
    paths: Vec<Vec<String>>,
}

impl Named {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                self.paths.push(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                path.push(r.ident.to_string());
                self.paths.push(path);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_test(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let reexport = matches!(u.vis, syn::Visibility::Public(_));
        if !reexport && !is_test(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() > 1 {
            self.paths.push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (tracing fields, format arguments).
        let text = m.tokens.to_string().replace(" :: ", "::");
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                self.paths.push(word.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
            }
        }
    }
}

/// Every module of the library and the modules each depends on.
fn graph() -> Graph {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let library: Vec<(PathBuf, Module)> = files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&root).unwrap().to_path_buf();
            let bin = rel == Path::new("main.rs") || rel.starts_with("cli");
            (!bin).then(|| (f, module_of(&rel)))
        })
        .collect();
    let modules: BTreeSet<Module> = library.iter().map(|(_, m)| m.clone()).collect();
    let mut graph = Graph::new();
    for (file, module) in &library {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut named = Named::default();
        named.visit_file(&ast);
        let mut deps = BTreeSet::new();
        for path in named.paths {
            let absolute: Module = match path[0].as_str() {
                "crate" => path[1..].to_vec(),
                "self" => module.iter().cloned().chain(path[1..].iter().cloned()).collect(),
                "super" => {
                    let mut base = module.clone();
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.into_iter().chain(rest.iter().cloned()).collect()
                }
                first => {
                    let mut child = module.clone();
                    child.push(first.to_string());
                    if !modules.contains(&child) {
                        continue;
                    }
                    module.iter().cloned().chain(path.iter().cloned()).collect()
                }
            };
            // The longest prefix that is a module.
            let target = (0..=absolute.len()).rev().map(|n| absolute[..n].to_vec()).find(|m| modules.contains(m));
            if let Some(t) = target
                && t != *module
            {
                deps.insert(t);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

fn name(m: &[String]) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a [String], usize>,
        low: BTreeMap<&'a [String], usize>,
        stack: Vec<&'a [String]>,
        on_stack: BTreeSet<&'a [String]>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut Search<'a>, v: &'a [String]) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_slice();
            let reach = if !s.index.contains_key(w) {
                visit(s, w);
                s.low[w]
            } else if s.on_stack.contains(w) {
                s.index[w]
            } else {
                continue;
            };
            let lv = s.low.get_mut(v).unwrap();
            *lv = (*lv).min(reach);
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(name(w));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_slice()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_engines_modules_import_each_other_in_no_cycle() {
    let graph = graph();
    let m = |s: &str| -> Module { s.split("::").map(str::to_string).collect() };
    assert!(graph.len() > 30, "the graph covers the engine: {} modules", graph.len());
    assert!(graph[&m("daemon")].contains(&m("pipeline")), "a `use crate::` is a dependency");
    assert!(graph[&m("sources::ebpf::read")].contains(&m("sources::ebpf::records")), "a `use super::` is a dependency");
    let found = cycles(&graph);
    let mut report = String::new();
    for c in &found {
        report.push_str(&format!("\ncycle: {}", c.join(", ")));
        for module in c {
            let key = if module == "crate" { vec![] } else { m(module) };
            let into: Vec<String> = graph[&key].iter().map(|d| name(d)).filter(|d| c.contains(d)).collect();
            report.push_str(&format!("\n  {module} -> {}", into.join(", ")));
        }
    }
    assert!(found.is_empty(), "import cycles among the engine's modules:{report}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let m = |s: &str| vec![s.to_string()];
    let graph = Graph::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
        (m("d"), BTreeSet::from([m("a")])),
    ]);
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
}

#[test]
fn no_rust_file_of_the_workspace_is_much_longer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["engine", "engine-ebpf", "plugin-sdk", "rules", "examples", "tests"] {
        workspace_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 100, "the walk found the workspace: {} files", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES_ELSEWHERE).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "files over {MAX_LINES_ELSEWHERE} lines:\n{}", long.join("\n"));
}

/// The Rust files under `dir`, without build output and test fixtures.
fn workspace_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "fixtures" | "golden") {
                workspace_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            let limit = if f.ends_with("main.rs") { MAX_MAIN_LINES } else { MAX_LINES };
            (lines > limit).then(|| format!("{} ({lines} lines, limit {limit})", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "files over the limit:\n{}", long.join("\n"));
}

/// What each top-level module may import (besides the event model and
/// `crate::error_chain`), as ARCHITECTURE.md's map says.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("alert", &[]),
    ("time", &[]),
    ("sched", &[]),
    ("proc", &[]),
    ("config", &["sched"]),
    ("enrich", &["config", "proc", "time"]),
    ("sources", &["config", "enrich", "proc", "time"]),
    ("watchers", &["config", "enrich", "sources", "time"]),
    ("plugin", &["alert", "config", "sources", "time"]),
    ("output", &["alert", "config", "time"]),
    ("metrics", &["plugin", "output", "sources", "watchers"]),
    ("pipeline", &["alert", "config", "metrics", "plugin", "sched", "output", "sources", "time"]),
    ("daemon", &["alert", "config", "enrich", "metrics", "pipeline", "output", "sources", "watchers"]),
];

#[test]
fn each_module_imports_only_what_the_map_allows() {
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        let Some(from) = module.first() else { continue };
        let allowed = MAY_IMPORT
            .iter()
            .find(|(m, _)| m == from)
            .unwrap_or_else(|| panic!("{from} is not in MAY_IMPORT: add it (and to ARCHITECTURE.md)"))
            .1;
        for d in deps {
            let to = d.first().map_or("crate", String::as_str);
            if to != from && to != "crate" && !allowed.contains(&to) {
                wrong.push(format!("{} -> {}", name(&module), name(&d)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports the map does not allow:\n{}", wrong.join("\n"));
}
