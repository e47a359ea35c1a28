//! `vigil rules check` for rule files: load Falco and Sigma files in the
//! interpreter component, as the daemon would, and say rule by rule what
//! runs, what does not, and why.

use std::path::{Path, PathBuf};

use super::PluginError;
use super::host::{PluginHost, content_hash};
use super::meta::{RuleMeta, RuleSettingsResolved};
use super::rule::{Loaded, LoadedRule};
use super::ruledir::{RULE_FILE_EXTENSIONS, list_files, list_rule_files, read_rule_file};

/// True for a path named like a rule file.
pub fn is_rule_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| RULE_FILE_EXTENSIONS.iter().any(|e| x == *e))
}

/// The rule files named by `paths` (files, or every rule file of a directory), in load order.
pub fn rule_files_of(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(list_files(p, RULE_FILE_EXTENSIONS)?);
        } else if is_rule_file(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Where `rules check` looks for the interpreter component, in order:
/// `explicit`; a `declarative.wasm` beside the checked files or in the
/// directories checked; the configured rule directory; `rules/` beside the
/// binary's directory; `target/rules` of the working directory.
pub fn interpreter_candidates(explicit: Option<&Path>, paths: &[PathBuf], rule_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            dirs.push(p.clone());
        } else if let Some(parent) = p.parent() {
            dirs.push(if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() });
        }
    }
    dirs.extend(rule_dir.map(Path::to_path_buf));
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin) = exe.parent()
    {
        dirs.push(bin.join("rules"));
        dirs.push(bin.join("../rules"));
    }
    dirs.push(PathBuf::from("target/rules"));
    dirs.into_iter().map(|d| d.join("declarative.wasm")).collect()
}

/// Loads `files` together in the interpreter at `interpreter` and returns its report.
pub fn check(
    host: &PluginHost,
    interpreter: &Path,
    files: &[PathBuf],
    settings: &dyn Fn(&RuleMeta) -> RuleSettingsResolved,
) -> Result<vigil_rulelang::Report, PluginError> {
    let bytes = std::fs::read(interpreter).map_err(|e| PluginError::RuleDir(interpreter.to_path_buf(), e))?;
    let hash = content_hash(&bytes);
    let mut sources = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        let name = f.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        match read_rule_file(f.parent().unwrap_or(Path::new(".")), f) {
            Ok(text) => sources.push(vigil_rulelang::SourceFile::new(name, text)),
            Err(e) => unreadable.push(vigil_rulelang::FileReport {
                name,
                dialect: None,
                error: Some(e),
                warnings: Vec::new(),
                rules: Vec::new(),
            }),
        }
    }
    let key = interpreter.with_file_name("[rule files]");
    match LoadedRule::load_files(host, &key, &bytes, &hash, &sources, settings)? {
        Loaded::Rule(rule) => {
            let mut report = rule.meta.files.as_ref().expect("load_files checked").report.clone();
            report.files.extend(unreadable);
            Ok(report)
        }
        _ => Err(PluginError::BadMetadata("the rule files are disabled by config (rule id rule-files)".into())),
    }
}

/// The first candidate that exists and is an interpreter.
pub fn find_interpreter(host: &PluginHost, candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|c| c.is_file() && is_interpreter(host, c)).cloned()
}

fn is_interpreter(host: &PluginHost, path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    let hash = content_hash(&bytes);
    let settings = |_: &RuleMeta| crate::plugin::policy::RulePolicy::default().resolve(&RuleMeta::default());
    matches!(LoadedRule::load(host, path, &bytes, &hash, &settings), Ok(Loaded::Interpreter(_)))
}

/// Prints `report` as `rules check` does; returns how many files could not
/// be read, entries were refused and rules are invalid (unsupported rules
/// are not errors: Falco would refuse the others).
pub fn print_report(report: &vigil_rulelang::Report, json: bool) -> usize {
    let mut broken = 0;
    for f in &report.files {
        broken += usize::from(f.error.is_some()) + f.warnings.len();
        broken += f.rules.iter().filter(|r| r.status == vigil_rulelang::Status::Invalid).count();
        if json {
            println!("{}", serde_json::to_string(f).expect("report serializes"));
            continue;
        }
        let dialect = f.dialect.map_or("-", |d| match d {
            vigil_rulelang::Dialect::Falco => "falco",
            vigil_rulelang::Dialect::Sigma => "sigma",
        });
        match &f.error {
            Some(e) => println!("{}: INVALID: {e}", f.name),
            None => {
                let count = |s| f.rules.iter().filter(|r| r.status == s).count();
                use vigil_rulelang::Status::*;
                println!(
                    "{} ({dialect}): {} loaded, {} unsupported, {} disabled, {} invalid",
                    f.name,
                    count(Loaded),
                    count(Unsupported),
                    count(Disabled),
                    count(Invalid)
                );
            }
        }
        for w in &f.warnings {
            println!("  warning: {w}");
        }
        for r in &f.rules {
            let kinds = if r.kinds.is_empty() { String::new() } else { format!(" [{}]", r.kinds.join(", ")) };
            let why = r.reason.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
            println!("  {:<11} {:<13} {}{kinds}{why}", r.status.name(), r.priority, r.name);
        }
    }
    broken
}

/// The `.wasm` files named by `paths` (files, or every `.wasm` of a directory).
pub fn wasm_files_of(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(list_rule_files(p)?);
        } else if !is_rule_file(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}
