//! The rule directory: which `.wasm` files are in it, and what changed since
//! the last look. Every change becomes a [`Control`] for the dispatcher only
//! after the new file compiled, validated and initialised; a bad file is
//! logged and whatever was loaded before keeps running.
//!
//! The directory is rescanned (not diffed from watcher events) so every way
//! of changing it is handled alike: a new file, an in-place write, `mv` over
//! the old file, an editor's temp-file-then-rename, a deletion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::PluginError;
use super::dispatch::Control;
use super::host::{PluginHost, content_hash};
use super::rule::{Loaded, LoadedRule, RuleMeta, RuleSettingsResolved};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Loaded, with this id.
    Loaded { hash: String, id: String },
    /// Valid but disabled, or refused: not retried until the file changes.
    Skipped { hash: String },
}

impl Seen {
    fn hash(&self) -> &str {
        match self {
            Seen::Loaded { hash, .. } | Seen::Skipped { hash } => hash,
        }
    }
}

/// What one scan found, for logs and `rules check`.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub loaded: Vec<String>,
    pub removed: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, String)>,
    pub disabled: Vec<String>,
}

pub struct RuleDir {
    dir: PathBuf,
    seen: HashMap<PathBuf, Seen>,
}

impl RuleDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RuleDir { dir: dir.into(), seen: HashMap::new() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Forget what was seen, so the next scan reloads every file (after a
    /// config change: new per-rule settings).
    pub fn forget(&mut self) {
        // Keep what is loaded (so a rule the new config disables is removed);
        // only the hashes go stale.
        for seen in self.seen.values_mut() {
            match seen {
                Seen::Loaded { hash, .. } | Seen::Skipped { hash } => hash.clear(),
            }
        }
    }

    /// Looks at the directory and returns the changes to apply, in the order
    /// to apply them: replacements and additions first, then removals, so a
    /// rule renamed (`mv a.wasm b.wasm`) is one replacement by id that hands
    /// its state over, not a removal and a fresh start. The caller applies
    /// them together (one [`Control::Batch`]) between two batches of events.
    pub fn scan(
        &mut self,
        host: &PluginHost,
        settings: &dyn Fn(&RuleMeta) -> RuleSettingsResolved,
    ) -> Result<(Vec<Control>, ScanReport), PluginError> {
        let mut report = ScanReport::default();
        let mut controls = Vec::new();
        let files = list_rule_files(&self.dir).map_err(|e| PluginError::RuleDir(self.dir.clone(), e))?;

        for path in self.seen.keys().cloned().collect::<Vec<_>>() {
            if !files.contains(&path)
                && let Some(Seen::Loaded { .. }) = self.seen.remove(&path)
            {
                controls.push(Control::Remove(path.clone()));
                report.removed.push(path);
            }
        }

        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    // Vanished between listing and reading: the next scan sees it.
                    tracing::debug!(path = %path.display(), error = %e, "cannot read rule file");
                    continue;
                }
            };
            let hash = content_hash(&bytes);
            if self.seen.get(&path).is_some_and(|s| s.hash() == hash) {
                continue;
            }
            match LoadedRule::load(host, &path, &bytes, &hash, settings) {
                Ok(Loaded::Rule(rule)) => {
                    let id = rule.meta.id.clone();
                    let clash = self
                        .seen
                        .iter()
                        .find(|(p, s)| **p != path && matches!(s, Seen::Loaded { id: other, .. } if *other == id));
                    if let Some((other, _)) = clash {
                        let msg = format!("rule id {id} is already loaded from {}", other.display());
                        tracing::error!(path = %path.display(), "{msg}; this file is ignored");
                        report.failed.push((path.clone(), msg));
                        // If this file's previous version is running, it stays.
                        if !matches!(self.seen.get(&path), Some(Seen::Loaded { .. })) {
                            self.seen.insert(path, Seen::Skipped { hash });
                        }
                        continue;
                    }
                    report.loaded.push(id.clone());
                    self.seen.insert(path, Seen::Loaded { hash, id });
                    controls.push(Control::Upsert(rule));
                }
                Ok(Loaded::Disabled(meta)) => {
                    tracing::info!(rule = %meta.id, path = %path.display(), "rule disabled by config");
                    if let Some(Seen::Loaded { .. }) = self.seen.get(&path) {
                        controls.push(Control::Remove(path.clone()));
                    }
                    report.disabled.push(meta.id);
                    self.seen.insert(path, Seen::Skipped { hash });
                }
                Err(e) => {
                    let kept = matches!(self.seen.get(&path), Some(Seen::Loaded { .. }));
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        kept_previous = kept,
                        "cannot load rule{}",
                        if kept { "; the previous version keeps running" } else { "" }
                    );
                    report.failed.push((path.clone(), e.to_string()));
                    if !kept {
                        self.seen.insert(path, Seen::Skipped { hash });
                    }
                }
            }
        }
        controls.sort_by_key(|c| matches!(c, Control::Remove(_)));
        Ok((controls, report))
    }
}

/// The `.wasm` files of `dir`, sorted; hidden files (editor temp files) skipped.
pub fn list_rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".wasm") {
            continue;
        }
        // Follow symlinks (ConfigMap volumes are symlink farms).
        if std::fs::metadata(entry.path()).map(|m| m.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
