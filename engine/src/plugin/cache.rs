//! The compile cache's files. What it holds is native code the daemon runs
//! as root, so it trusts nothing it did not check:
//!
//! - the directory is created 0700, must belong to the daemon's user and be
//!   writable by no one else, and so must every directory above it (or be
//!   sticky, as /tmp is: no one else can rename what is ours in it);
//! - it is opened once, at start, and every file is read and written
//!   relative to that handle (`openat`, never following a link): swapping
//!   the directory or a parent after the check changes nothing;
//! - each artifact is checked on its open handle before it is read (a
//!   regular file, ours, writable by no one else, at most
//!   [`MAX_ARTIFACT_BYTES`]); one that fails is ignored, logged, and
//!   replaced by a fresh compile.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Largest compiled artifact read (a bundled rule's is a few MiB).
pub const MAX_ARTIFACT_BYTES: u64 = 256 << 20;

/// The cache directory, opened.
pub struct CompileCache {
    path: PathBuf,
    dir: OwnedFd,
}

impl CompileCache {
    /// Creates (0700) and opens `path`; `Err` says why it cannot be trusted.
    pub fn open(path: &Path) -> Result<Self, String> {
        create_private_dir(path).map_err(|e| format!("cannot create the compile cache directory: {e}"))?;
        check_private_dir(path)?;
        check_ancestors(path)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| format!("cannot open the compile cache directory: {e}"))?;
        // What was checked by path is what was opened.
        let st = rustix::fs::fstat(&dir).map_err(|e| format!("cannot stat the compile cache directory: {e}"))?;
        if st.st_uid != euid() || st.st_mode & 0o022 != 0 {
            return Err("the compile cache directory changed while it was checked".into());
        }
        Ok(CompileCache { path: path.to_path_buf(), dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The artifact `name`, if there and trusted.
    pub fn load(&self, name: &str) -> Option<Vec<u8>> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&self.dir, name, flags, Mode::empty()).ok()?;
        let file = std::fs::File::from(fd);
        let meta = file.metadata().ok()?;
        let why = if !meta.file_type().is_file() {
            Some("not a regular file".to_string())
        } else if meta.uid() != euid() {
            Some(format!("owned by uid {}, not this daemon's", meta.uid()))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!("writable by others (mode {:o})", meta.mode() & 0o777))
        } else if meta.size() > MAX_ARTIFACT_BYTES {
            Some(format!("{} bytes, over {MAX_ARTIFACT_BYTES}", meta.size()))
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(dir = %self.path.display(), file = name, "compiled rule cache entry not trusted ({why}); recompiling");
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.size() as usize);
        file.take(MAX_ARTIFACT_BYTES).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Writes the artifact `name` (0600, through a temporary file renamed
    /// into place: a reader never sees half of it, and two daemons may
    /// share the cache).
    pub fn store(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = format!("{name}.{}.{}.tmp", std::process::id(), crate::time::now_ns());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir, tmp.as_str(), flags, Mode::from_raw_mode(0o600))?;
        let written = std::fs::File::from(fd).write_all(bytes);
        let renamed = written.and_then(|()| Ok(rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, name)?));
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        renamed
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The cache directory must be ours and closed to everyone else.
fn check_private_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot stat the compile cache directory: {e}"))?;
    let me = euid();
    if !meta.is_dir() {
        return Err("the compile cache path is not a directory (or is a symlink)".into());
    }
    if meta.uid() != me {
        return Err(format!("the compile cache directory belongs to uid {}, not this daemon's uid {me}", meta.uid()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        // Others could have planted files already: tightening now is too late.
        return Err(format!("the compile cache directory is writable by others (mode {mode:o}); it must be 0700"));
    }
    if mode & 0o077 != 0 {
        // Ours and written only by us: close it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot set the compile cache directory to mode 0700: {e}"))?;
        tracing::info!(dir = %dir.display(), old_mode = format!("{mode:o}"), "compile cache directory set to mode 0700");
    }
    Ok(())
}

/// Every directory above the cache must belong to root or the daemon's
/// user and be writable by no one else, unless sticky (whoever can write
/// there cannot rename what is ours); else another user could swap the
/// cache for a directory of their own.
fn check_ancestors(dir: &Path) -> Result<(), String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve the compile cache directory: {e}"))?;
    let me = euid();
    for parent in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).map_err(|e| format!("cannot stat {}: {e}", parent.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        if (meta.uid() != 0 && meta.uid() != me) || (meta.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "{} (above the compile cache) belongs to uid {} with mode {:o}: another user could swap the cache",
                parent.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn cache_directory_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap();
        let current = || std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        mode(0o755);
        check_private_dir(dir.path()).unwrap();
        assert_eq!(current(), 0o700, "readable by others: tightened");
        mode(0o777);
        assert!(check_private_dir(dir.path()).unwrap_err().contains("writable by others"));
        mode(0o770);
        assert!(check_private_dir(dir.path()).is_err());
        mode(0o700);
        check_private_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_parent_others_can_write_to_is_refused_unless_sticky() {
        let top = tempfile::tempdir().unwrap();
        let parent = top.path().join("shared");
        std::fs::create_dir(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = CompileCache::open(&parent.join("cache")).err().expect("refused");
        assert!(err.contains("another user could swap the cache"), "{err}");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        CompileCache::open(&parent.join("cache")).expect("a sticky parent, as /tmp");
    }

    #[test]
    fn artifacts_are_read_through_the_opened_directory_and_checked() {
        let top = tempfile::tempdir().unwrap();
        let path = top.path().join("cache");
        let cache = CompileCache::open(&path).unwrap();
        cache.store("a.cwasm", b"compiled").unwrap();
        assert_eq!(cache.load("a.cwasm").as_deref(), Some(b"compiled".as_slice()));
        assert_eq!(std::fs::metadata(path.join("a.cwasm")).unwrap().permissions().mode() & 0o777, 0o600);
        // Planted with a mode others can write: refused.
        std::fs::write(path.join("b.cwasm"), b"planted").unwrap();
        std::fs::set_permissions(path.join("b.cwasm"), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(cache.load("b.cwasm"), None);
        // A link, even to our own artifact: not followed.
        std::os::unix::fs::symlink(path.join("a.cwasm"), path.join("c.cwasm")).unwrap();
        assert_eq!(cache.load("c.cwasm"), None);
        // The directory swapped after the start: the handle still reads and
        // writes the one that was checked.
        std::fs::rename(&path, top.path().join("moved")).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("a.cwasm"), b"swapped").unwrap();
        assert_eq!(cache.load("a.cwasm").as_deref(), Some(b"compiled".as_slice()));
        cache.store("d.cwasm", b"new").unwrap();
        assert!(top.path().join("moved/d.cwasm").exists() && !path.join("d.cwasm").exists());
    }

    #[test]
    fn an_artifact_of_another_user_is_refused() {
        if euid() != 0 {
            eprintln!("skipped: only root can give a file to another user");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        let path = top.path().join("cache");
        let cache = CompileCache::open(&path).unwrap();
        cache.store("a.cwasm", b"compiled").unwrap();
        std::os::unix::fs::chown(path.join("a.cwasm"), Some(65534), None).unwrap();
        assert_eq!(cache.load("a.cwasm"), None);
    }
}
