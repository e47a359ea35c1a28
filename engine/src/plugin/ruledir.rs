//! The rule directory: which `.wasm` files and rule files (`.yaml`, `.yml`:
//! Falco and Sigma) are in it, and what changed since the last look. The
//! rule files all run in one instance of the interpreter component found
//! among the `.wasm` files (`declarative.wasm`), rebuilt when any of them
//! changes; a file that no longer parses keeps its last good text. Every change becomes a [`Control`] for the dispatcher only
//! after the new file compiled, validated and initialised; a bad file is
//! logged and whatever was loaded before keeps running.
//!
//! The directory is rescanned (not diffed from watcher events) so every way
//! of changing it is handled alike: a new file, an in-place write, `mv` over
//! the old file, an editor's temp-file-then-rename, a deletion.
//!
//! Overlay directories (`rules.overlay_dirs`) layer over it: the rules are
//! the files of every layer, a file replacing the one of the same name in
//! a lower layer (the bundled rules of the image, a ConfigMap over them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::PluginError;
use super::dispatch::Control;
use super::host::{PluginHost, content_hash};
use super::meta::{RuleMeta, RuleSettingsResolved};
use super::rule::{Loaded, LoadedRule, RULE_FILES_ID};
use crate::alert::Alarm;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Loaded, with this id.
    Loaded { hash: String, id: String },
    /// Valid but disabled, or refused: not retried until the file changes.
    Skipped { hash: String },
    /// Valid, but another file claims the same id: neither is loaded, and
    /// both are tried again at every scan, so the one left loads once the
    /// other is gone or changed.
    Clashed { hash: String, id: String },
}

impl Seen {
    fn hash(&self) -> &str {
        match self {
            Seen::Loaded { hash, .. } | Seen::Skipped { hash } | Seen::Clashed { hash, .. } => hash,
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
    /// What the rule files loaded, when they were (re)loaded.
    pub rule_files: Option<vigil_rulelang::Report>,
}

/// The interpreter component of rule files, as found in the directory.
struct Interpreter {
    path: PathBuf,
    bytes: Vec<u8>,
    hash: String,
}

pub struct RuleDir {
    dir: PathBuf,
    /// Layered over `dir`, lowest first.
    overlays: Vec<PathBuf>,
    seen: HashMap<PathBuf, Seen>,
    interpreter: Option<Interpreter>,
    /// The last text of each rule file that parsed: kept running when an
    /// edit does not parse.
    good_text: BTreeMap<PathBuf, String>,
    /// What the running rule-files instance was built from (interpreter and
    /// file hashes), so an unchanged directory is not reloaded.
    files_signature: String,
    files_loaded: bool,
}

impl RuleDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RuleDir {
            dir: dir.into(),
            overlays: Vec::new(),
            seen: HashMap::new(),
            interpreter: None,
            good_text: BTreeMap::new(),
            files_signature: String::new(),
            files_loaded: false,
        }
    }

    /// With `overlays` layered over the directory, lowest first.
    pub fn with_overlays(mut self, overlays: Vec<PathBuf>) -> Self {
        self.overlays = overlays;
        self
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory and its overlays, lowest first.
    pub fn layers(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dir.as_path()).chain(self.overlays.iter().map(PathBuf::as_path))
    }

    /// The files of every layer with one of `extensions`, sorted by name, a
    /// file replacing the one of the same name in a lower layer.
    fn list_layered(&self, extensions: &[&str]) -> Result<Vec<PathBuf>, PluginError> {
        let mut by_name = BTreeMap::new();
        for dir in self.layers() {
            super::trust::check_dir(dir).map_err(|why| PluginError::UntrustedRuleDir(dir.to_path_buf(), why))?;
            for path in list_files(dir, extensions).map_err(|e| PluginError::RuleDir(dir.to_path_buf(), e))? {
                if let Some(name) = path.file_name() {
                    by_name.insert(name.to_os_string(), path);
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// Forget what was seen, so the next scan reloads every file (after a
    /// config change: new per-rule settings).
    pub fn forget(&mut self) {
        // Keep what is loaded (so a rule the new config disables is removed);
        // only the hashes go stale.
        for seen in self.seen.values_mut() {
            match seen {
                Seen::Loaded { hash, .. } | Seen::Skipped { hash } | Seen::Clashed { hash, .. } => hash.clear(),
            }
        }
        self.files_signature.clear();
    }

    /// The key under which the rule files' instance is loaded (not a file).
    pub fn rule_files_key(&self) -> PathBuf {
        self.dir.join("[rule files]")
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
        let files = self.list_layered(&["wasm"])?;

        for path in self.seen.keys().cloned().collect::<Vec<_>>() {
            if !files.contains(&path)
                && let Some(Seen::Loaded { .. }) = self.seen.remove(&path)
            {
                controls.push(Control::Remove(path.clone()));
                report.removed.push(path);
            }
        }
        if self.interpreter.as_ref().is_some_and(|i| !files.contains(&i.path)) {
            self.interpreter = None;
            // Another interpreter file may be there, seen and skipped: look again.
            for seen in self.seen.values_mut() {
                if let Seen::Skipped { hash } = seen {
                    hash.clear();
                }
            }
        }

        // Rules loaded in this scan: checked for a shared id before they run.
        let mut candidates = Vec::new();
        for path in files {
            let bytes = match super::trust::read_trusted(layer_of(&path), &path, super::trust::MAX_COMPONENT_BYTES) {
                Ok(b) => b,
                Err(e) if !path.exists() => {
                    // Vanished between listing and reading: the next scan sees it.
                    tracing::debug!(path = %path.display(), error = %e, "cannot read rule file");
                    continue;
                }
                Err(e) => {
                    // Untrusted or unreadable: refused, and a running version of it stays.
                    if !matches!(self.seen.get(&path), Some(Seen::Loaded { .. })) {
                        tracing::error!(path = %path.display(), error = %e, "rule file refused");
                        report.failed.push((path.clone(), e));
                        self.seen.insert(path, Seen::Skipped { hash: String::new() });
                    }
                    continue;
                }
            };
            let hash = content_hash(&bytes);
            if self.seen.get(&path).is_some_and(|s| s.hash() == hash && !matches!(s, Seen::Clashed { .. })) {
                continue;
            }
            match LoadedRule::load(host, &path, &bytes, &hash, settings) {
                Ok(Loaded::Rule(rule)) => {
                    let id = rule.meta.id.clone();
                    if id == RULE_FILES_ID {
                        let msg = format!("rule id {id} is reserved for the rule files");
                        tracing::error!(path = %path.display(), "{msg}; this file is ignored");
                        report.failed.push((path.clone(), msg));
                        if !matches!(self.seen.get(&path), Some(Seen::Loaded { .. })) {
                            self.seen.insert(path, Seen::Skipped { hash });
                        }
                        continue;
                    }
                    candidates.push((path, hash, rule));
                }
                Ok(Loaded::Interpreter(meta)) => {
                    tracing::info!(path = %path.display(), version = %meta.version, "interpreter of rule files found");
                    if let Some(Seen::Loaded { .. }) = self.seen.get(&path) {
                        controls.push(Control::Remove(path.clone()));
                    }
                    self.interpreter = Some(Interpreter { path: path.clone(), bytes, hash: hash.clone() });
                    self.seen.insert(path, Seen::Skipped { hash });
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
        self.claim_ids(candidates, &mut controls, &mut report);
        self.scan_rule_files(host, settings, &mut controls, &mut report)?;
        controls.sort_by_key(|c| matches!(c, Control::Remove(_)));
        Ok((controls, report))
    }

    /// Loads the rules of this scan whose id no other file claims. Files
    /// that claim the same id (loaded in this scan, or running) are all
    /// refused, a running one unloaded, with an error naming every path and
    /// a Critical alert: no file can shadow another's rule, and the clash
    /// cannot go unnoticed.
    fn claim_ids(
        &mut self,
        candidates: Vec<(PathBuf, String, Box<LoadedRule>)>,
        controls: &mut Vec<Control>,
        report: &mut ScanReport,
    ) {
        // Per id: each file claiming it, its hash, and the rule if loaded now.
        type Claim = (PathBuf, String, Option<Box<LoadedRule>>);
        let mut by_id: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
        for (path, hash, rule) in candidates {
            by_id.entry(rule.meta.id.clone()).or_default().push((path, hash, Some(rule)));
        }
        for (id, mut claims) in by_id {
            for (path, seen) in &self.seen {
                if let Seen::Loaded { id: other, hash } | Seen::Clashed { id: other, hash } = seen
                    && *other == id
                    && !claims.iter().any(|c| c.0 == *path)
                {
                    claims.push((path.clone(), hash.clone(), None));
                }
            }
            if let [(path, hash, Some(_))] = &claims[..] {
                let (path, hash) = (path.clone(), hash.clone());
                let rule = claims.pop().and_then(|c| c.2).expect("matched above");
                report.loaded.push(id.clone());
                self.seen.insert(path, Seen::Loaded { hash, id });
                controls.push(Control::Upsert(rule));
                continue;
            }
            claims.sort_by(|a, b| a.0.cmp(&b.0));
            let paths: Vec<String> = claims.iter().map(|c| c.0.display().to_string()).collect();
            let msg = format!(
                "rule id {id} is claimed by {}: none of them runs until only one file claims it",
                paths.join(" and ")
            );
            tracing::error!(rule = %id, "{msg}");
            for (path, hash, _) in claims {
                if matches!(self.seen.get(&path), Some(Seen::Loaded { .. })) {
                    controls.push(Control::Remove(path.clone()));
                }
                report.failed.push((path.clone(), msg.clone()));
                self.seen.insert(path, Seen::Clashed { hash, id: id.clone() });
            }
            controls.push(Control::Alarm(Alarm {
                rule: "Vigil rule id claimed twice",
                message: msg,
                fields: vec![("vigil.rule.id", id), ("vigil.rule.paths", paths.join(", "))],
            }));
        }
    }

    /// Reloads the rule files' instance when a rule file or the interpreter changed.
    fn scan_rule_files(
        &mut self,
        host: &PluginHost,
        settings: &dyn Fn(&RuleMeta) -> RuleSettingsResolved,
        controls: &mut Vec<Control>,
        report: &mut ScanReport,
    ) -> Result<(), PluginError> {
        let key = self.rule_files_key();
        let paths = self.list_layered(RULE_FILE_EXTENSIONS)?;
        let mut current: Vec<(PathBuf, String)> = Vec::new();
        let mut signature = self.interpreter.as_ref().map_or(String::new(), |i| i.hash.clone());
        for path in paths {
            match read_rule_file(layer_of(&path), &path) {
                Ok(text) => {
                    signature.push_str(&format!(" {}={}", path.display(), content_hash(text.as_bytes())));
                    current.push((path, text));
                }
                Err(e) => {
                    signature.push_str(&format!(" {}=unreadable", path.display()));
                    // Like a file that no longer parses: its last good text runs on.
                    if let Some(good) = self.good_text.get(&path) {
                        current.push((path.clone(), good.clone()));
                    }
                    report.failed.push((path, e));
                }
            }
        }
        if signature == self.files_signature {
            return Ok(());
        }
        self.files_signature = signature;
        self.good_text.retain(|p, _| current.iter().any(|(c, _)| c == p));
        for (path, e) in &report.failed {
            if path.extension().is_some_and(|x| RULE_FILE_EXTENSIONS.iter().any(|e| x == *e)) {
                tracing::error!(path = %path.display(), error = %e, "cannot read rule file");
            }
        }
        if current.is_empty() {
            if self.files_loaded {
                controls.push(Control::Remove(key.clone()));
                report.removed.push(key);
                self.files_loaded = false;
            }
            return Ok(());
        }
        let Some(interp) = &self.interpreter else {
            let msg = format!(
                "{} rule file(s) need the interpreter component (declarative.wasm, built by scripts/build-rules.sh) in {}",
                current.len(),
                self.dir.display()
            );
            tracing::error!("{msg}; they are not loaded");
            for (path, _) in current {
                report.failed.push((path, msg.clone()));
            }
            return Ok(());
        };
        let name = |p: &Path| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut files: Vec<vigil_rulelang::SourceFile> =
            current.iter().map(|(p, text)| vigil_rulelang::SourceFile::new(name(p), text.clone())).collect();
        let mut loaded = LoadedRule::load_files(host, &key, &interp.bytes, &interp.hash, &files, settings);
        // A file that no longer parses runs its last good text.
        if let Ok(Loaded::Rule(rule)) = &loaded
            && let Some(rf) = &rule.meta.files
        {
            let mut substituted = false;
            for (i, f) in rf.report.files.iter().enumerate() {
                let Some(error) = &f.error else { continue };
                let path = &current[i].0;
                match self.good_text.get(path) {
                    Some(good) => {
                        tracing::error!(path = %path.display(), %error, "rule file no longer loads; its previous version keeps running");
                        files[i].text = good.clone();
                        substituted = true;
                    }
                    None => tracing::error!(path = %path.display(), %error, "cannot load rule file"),
                }
                report.failed.push((path.clone(), error.clone()));
            }
            if substituted {
                loaded = LoadedRule::load_files(host, &key, &interp.bytes, &interp.hash, &files, settings);
            }
        }
        match loaded {
            Ok(Loaded::Rule(rule)) => {
                let rf = rule.meta.files.clone().expect("load_files checked");
                for (i, f) in rf.report.files.iter().enumerate() {
                    if f.error.is_none() {
                        self.good_text.insert(current[i].0.clone(), files[i].text.clone());
                    }
                    log_file_report(f);
                }
                report.rule_files = Some(rf.report.clone());
                report.loaded.push(RULE_FILES_ID.to_string());
                controls.push(Control::Upsert(rule));
                self.files_loaded = true;
            }
            Ok(Loaded::Disabled(_)) => {
                tracing::info!("rule files disabled by config (rule id {RULE_FILES_ID})");
                if self.files_loaded {
                    controls.push(Control::Remove(key));
                    self.files_loaded = false;
                }
                report.disabled.push(RULE_FILES_ID.to_string());
            }
            Ok(Loaded::Interpreter(_)) => unreachable!("load_files never probes"),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    kept_previous = self.files_loaded,
                    "cannot load the rule files{}",
                    if self.files_loaded { "; the previous version keeps running" } else { "" }
                );
                report.failed.push((key, e.to_string()));
            }
        }
        Ok(())
    }
}

/// Logs what one rule file loaded, and each rule that does not run and why.
fn log_file_report(f: &vigil_rulelang::FileReport) {
    use vigil_rulelang::Status;
    let count = |s: Status| f.rules.iter().filter(|r| r.status == s).count();
    tracing::info!(
        file = %f.name,
        dialect = ?f.dialect,
        loaded = count(Status::Loaded),
        unsupported = count(Status::Unsupported),
        disabled = count(Status::Disabled),
        invalid = count(Status::Invalid),
        "rule file loaded"
    );
    for w in &f.warnings {
        tracing::warn!(file = %f.name, warning = %w, "rule file entry skipped");
    }
    for r in &f.rules {
        match r.status {
            Status::Unsupported => {
                tracing::info!(file = %f.name, rule = %r.name, reason = r.reason.as_deref().unwrap_or(""), "rule not run: unsupported")
            }
            Status::Invalid => {
                tracing::warn!(file = %f.name, rule = %r.name, reason = r.reason.as_deref().unwrap_or(""), "rule not run: invalid")
            }
            _ => {}
        }
    }
}

/// Extensions of rule files.
pub const RULE_FILE_EXTENSIONS: &[&str] = &["yaml", "yml"];

/// The layer (directory) a listed file is in.
fn layer_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Reads a rule file of the directory `dir` (trust checks, and refusing
/// one larger than the interpreter reads).
pub fn read_rule_file(dir: &Path, path: &Path) -> Result<String, String> {
    let bytes = super::trust::read_trusted(dir, path, vigil_rulelang::MAX_FILE as u64)?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// The `.wasm` files of `dir`, sorted; hidden files (editor temp files) skipped.
pub fn list_rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    list_files(dir, &["wasm"])
}

/// The files of `dir` with one of `extensions`, sorted by name; hidden
/// files (editor temp files, a ConfigMap's `..data`) skipped.
pub fn list_files(dir: &Path, extensions: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = name.rsplit_once('.').is_some_and(|(_, ext)| extensions.contains(&ext));
        if name.starts_with('.') || !wanted {
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
