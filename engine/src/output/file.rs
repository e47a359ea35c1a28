//! Alerts appended to a file as JSON lines, with an fsync policy and
//! rotation by size (`alerts.json` → `alerts.json.1` → ... → `.N`, oldest
//! dropped). A batch is never split across two files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fields::FieldSelection;
use super::{AlertBatch, Output, OutputError};
use crate::config::{FileConfig, FsyncPolicy};

pub struct FileOutput {
    name: String,
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    last_sync: Instant,
    dirty: bool,
    fields: FieldSelection,
}

impl FileOutput {
    pub fn open(cfg: &FileConfig) -> Result<Self, OutputError> {
        let name = format!("file:{}", cfg.path.display());
        let file = open_append(&cfg.path).map_err(|source| OutputError::Io { output: name.clone(), source })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileOutput {
            name,
            path: cfg.path.clone(),
            file,
            size,
            max_bytes: cfg.max_bytes.as_u64(),
            max_files: cfg.max_files,
            fsync: cfg.fsync,
            fsync_interval: cfg.fsync_interval,
            last_sync: Instant::now(),
            dirty: false,
            fields: FieldSelection::new(&cfg.fields),
        })
    }

    fn io(&self, source: std::io::Error) -> OutputError {
        OutputError::Io { output: self.name.clone(), source }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        for i in (1..self.max_files).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        tracing::info!(path = %self.path.display(), "alert file rotated");
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

impl Output for FileOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), OutputError> {
        let lines = batch.lines(&self.fields);
        let len = lines.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate().map_err(|e| self.io(e))?;
        }
        self.file.write_all(&lines).map_err(|e| self.io(e))?;
        self.size += len;
        self.dirty = true;
        match self.fsync {
            FsyncPolicy::Always => self.sync().map_err(|e| self.io(e))?,
            FsyncPolicy::Interval if self.last_sync.elapsed() >= self.fsync_interval => {
                self.sync().map_err(|e| self.io(e))?
            }
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        if self.dirty && self.fsync != FsyncPolicy::Never {
            self.sync().map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::AlertBatch;

    fn batch(n: usize) -> AlertBatch {
        AlertBatch { alerts: Vec::new(), json_lines: format!("{}\n", "x".repeat(n - 1)).into_bytes() }
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        let cfg = FileConfig {
            path: path.clone(),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
            max_bytes: bytesize::ByteSize::b(4096),
            max_files: 2,
            fields: Vec::new(),
        };
        let mut output = FileOutput::open(&cfg).unwrap();
        for _ in 0..10 {
            output.write(&batch(1000)).unwrap();
        }
        output.flush().unwrap();
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(len(&path) <= 4096 && len(&path) > 0);
        assert_eq!(len(&numbered(&path, 1)), 4000);
        assert_eq!(len(&numbered(&path, 2)), 4000);
        assert!(!numbered(&path, 3).exists());
        // Reopening appends.
        let mut again = FileOutput::open(&cfg).unwrap();
        let before = len(&path);
        again.write(&batch(10)).unwrap();
        assert_eq!(len(&path), before + 10);
    }
}
