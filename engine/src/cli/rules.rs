//! `vigil rules check`: validate rule components and rule files as the
//! daemon would load them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use vigil_engine::config::Config;
use vigil_engine::plugin::host::{PluginHost, content_hash};
use vigil_engine::plugin::policy::RulePolicy;
use vigil_engine::plugin::rule::{Loaded, LoadedRule};
use vigil_engine::plugin::rulefiles;

/// Checks components and rule files; exits 1 if any is invalid.
pub fn check(paths: &[PathBuf], config: Option<PathBuf>, json: bool, interpreter: Option<PathBuf>) -> Result<ExitCode> {
    let cfg = super::start(config.as_deref())?;
    let components = check_rules(&cfg, paths, json)?;
    let files = check_rule_files(&cfg, paths, interpreter.as_deref(), json)?;
    Ok(if components == ExitCode::SUCCESS { files } else { components })
}

/// `rules check` of the rule files among `paths` (nothing to do when there are none).
fn check_rule_files(cfg: &Config, paths: &[PathBuf], interpreter: Option<&Path>, json: bool) -> Result<ExitCode> {
    let files = rulefiles::rule_files_of(paths).context("cannot list rule files")?;
    if files.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let host = PluginHost::for_config(cfg)?;
    let candidates = rulefiles::interpreter_candidates(interpreter, paths, cfg.rules.dir.as_deref());
    let Some(found) = rulefiles::find_interpreter(&host, &candidates) else {
        let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        bail!(
            "no interpreter component for rule files (declarative.wasm, built by scripts/build-rules.sh); looked at: {}; say where with --interpreter",
            looked.join(", ")
        );
    };
    let policy = RulePolicy::new(cfg);
    let report = rulefiles::check(&host, &found, &files, &|m| policy.resolve(m))?;
    let broken = rulefiles::print_report(&report, json);
    Ok(if broken > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn check_rules(cfg: &Config, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let host = PluginHost::for_config(cfg)?;
    let policy = RulePolicy::new(cfg);
    let files = rulefiles::wasm_files_of(paths).context("cannot list rule components")?;
    let mut failed = 0;
    for path in files {
        let bytes = std::fs::read(&path);
        let hash = bytes.as_deref().map(content_hash).unwrap_or_default();
        let result = bytes
            .as_deref()
            .map_err(|e| anyhow::anyhow!("cannot read it: {e}"))
            .and_then(|bytes| Ok(LoadedRule::load(&host, &path, bytes, &hash, &|m| policy.resolve(m))?));
        // A cache hit when the cache is on: the load above just compiled it.
        let imports = bytes.as_deref().ok().and_then(|b| host.compile(b, &hash).ok()).map(|(component, _)| {
            let granted = |id: &str| cfg.rules.settings.get(id).is_some_and(|s| s.wasi.is_some());
            (component, granted)
        });
        let (meta, status) = match result {
            Ok(Loaded::Rule(r)) => (Some(r.meta.clone()), "ok".to_string()),
            Ok(Loaded::Disabled(m)) => (Some(m), "ok (disabled by config)".to_string()),
            Ok(Loaded::Interpreter(m)) => (Some(m), "ok (the interpreter of rule files)".to_string()),
            Err(e) => {
                failed += 1;
                (None, format!("{e:#}"))
            }
        };
        let imports: Vec<(String, &str)> = match (&imports, &meta) {
            (Some((component, granted)), Some(m)) => host.imports(component, granted(&m.id)),
            (Some((component, _)), None) => host.imports(component, false),
            _ => Vec::new(),
        };
        if json {
            let v = serde_json::json!({
                "imports": imports.iter().map(|(name, status)| serde_json::json!({"name": name, "status": status})).collect::<Vec<_>>(),
                "path": path,
                "ok": meta.is_some(),
                "status": status,
                "id": meta.as_ref().map(|m| &m.id),
                "version": meta.as_ref().map(|m| &m.version),
                "description": meta.as_ref().map(|m| &m.description),
                "subscriptions": meta.as_ref().map(|m| m.subscriptions.iter().map(|k| k.name()).collect::<Vec<_>>()),
                "containers_only": meta.as_ref().map(|m| m.containers_only),
                "tags": meta.as_ref().map(|m| &m.tags),
            });
            println!("{v}");
        } else {
            match meta {
                Some(m) => {
                    println!("{}: {status}", path.display());
                    println!("  id:            {}", m.id);
                    println!("  version:       {}", m.version);
                    println!("  description:   {}", m.description);
                    let subs: Vec<_> = m.subscriptions.iter().map(|k| k.name()).collect();
                    println!("  subscriptions: {}", subs.join(", "));
                    let scope = if m.containers_only { "processes in containers" } else { "every process" };
                    println!("  scope:         {scope}");
                    println!("  tags:          {}", m.tags.join(", "));
                    println!("  imports:");
                    for (name, status) in &imports {
                        println!("    {name}: {status}");
                    }
                }
                None => println!("{}: INVALID: {status}", path.display()),
            }
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
