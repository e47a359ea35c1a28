//! Trust checks on the rule directory, before the daemon (often root)
//! reads what is in it: a file another user could have planted or changed,
//! a link out of the directory, or a file too large to be a rule is refused
//! with the reason, before a byte of it is read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Largest rule component (`.wasm`) read; the bundled interpreter is ~1.4 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 32 << 20;

/// Whether `meta` belongs to root or to the daemon's own user, and is not
/// writable by group or others; the reason when not.
fn trusted_owner_and_mode(what: &str, meta: &std::fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!("{what} is owned by uid {}, not root or the daemon's user ({me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{what} is writable by group or others (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// Checks the rule directory itself: owned by root or the daemon's user,
/// not writable by group or others (anyone who can write there can run
/// code in the daemon's rule host).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    trusted_owner_and_mode("the rule directory", &meta)
}

/// Reads `path`, a file listed in the rule directory `dir`, at most `max`
/// bytes: refused when it is a link that leaves `dir`, is not a regular
/// file, is owned by another user or writable by group or others, or is
/// larger than `max` (checked on the opened file, so it cannot be swapped
/// between the check and the read).
pub fn read_trusted(dir: &Path, path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let link = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve the link: {e}"))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve the rule directory: {e}"))?;
        if !target.starts_with(&dir) {
            return Err(format!("a link out of the rule directory (to {})", target.display()));
        }
    }
    let mut file = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    trusted_owner_and_mode("the file", &meta)?;
    if meta.len() > max {
        return Err(format!("{} bytes: larger than the {max} bytes a rule file may have", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref().take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("grew past the {max} bytes a rule file may have while read"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_plain_file_of_the_daemons_user_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.wasm");
        std::fs::write(&f, b"rule").unwrap();
        chmod(&f, 0o644);
        assert_eq!(read_trusted(dir.path(), &f, 100).unwrap(), b"rule");
        assert!(check_dir(dir.path()).is_ok());
    }

    #[test]
    fn writable_by_others_too_large_or_a_link_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.wasm");
        std::fs::write(&f, b"rule").unwrap();
        chmod(&f, 0o666);
        assert!(read_trusted(dir.path(), &f, 100).unwrap_err().contains("writable by group or others"));
        chmod(&f, 0o644);
        assert!(read_trusted(dir.path(), &f, 3).unwrap_err().contains("larger than"));

        // A sparse file: refused by its size, without reading it.
        let sparse = dir.path().join("big.wasm");
        let file = File::create(&sparse).unwrap();
        file.set_len(3 << 30).unwrap();
        assert!(read_trusted(dir.path(), &sparse, MAX_COMPONENT_BYTES).unwrap_err().contains("larger than"));

        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("x.wasm");
        std::fs::write(&target, b"rule").unwrap();
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_trusted(dir.path(), &link, 100).unwrap_err().contains("link out of the rule directory"));
        // A link inside the directory (a ConfigMap's `..data`) is followed.
        let inside = dir.path().join("inside.wasm");
        std::os::unix::fs::symlink(&f, &inside).unwrap();
        assert_eq!(read_trusted(dir.path(), &inside, 100).unwrap(), b"rule");

        chmod(dir.path(), 0o777);
        assert!(check_dir(dir.path()).unwrap_err().contains("writable by group or others"));
        chmod(dir.path(), 0o700);
    }
}
