//! The rule directory is trusted only as root or the daemon's user left it:
//! a directory others can write to is refused at start; a file another user
//! owns, one writable by others, a link out of the directory or a huge
//! sparse file is refused with its reason, and the good rules beside it load.

use std::os::unix::fs::PermissionsExt;

use vigil_engine::plugin::host::{HostSettings, PluginHost};
use vigil_engine::plugin::policy::RulePolicy;
use vigil_engine::plugin::ruledir::RuleDir;

use crate::support::*;

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_rule_directory_others_can_write_to_is_refused_at_start() {
    let dir = rule_dir(&["echo"]);
    chmod(dir.path(), 0o777);
    let out = vigil()
        .args(["run", "--source", "replay", "--replay"])
        .arg(fixture("bundled.jsonl"))
        .arg("--rules")
        .arg(dir.path())
        .output()
        .unwrap();
    chmod(dir.path(), 0o700);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not trusted") && err.contains("writable by group or others"), "{err}");
}

#[test]
fn untrusted_files_are_refused_and_the_rest_load() {
    let dir = rule_dir(&["echo"]);
    let echo = std::fs::read(rule_wasm("echo")).unwrap();
    let writable = dir.path().join("writable.wasm");
    std::fs::write(&writable, &echo).unwrap();
    chmod(&writable, 0o666);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("elsewhere.wasm"), &echo).unwrap();
    std::os::unix::fs::symlink(outside.path().join("elsewhere.wasm"), dir.path().join("link-out.wasm")).unwrap();
    std::fs::File::create(dir.path().join("sparse.wasm")).unwrap().set_len(3 << 30).unwrap();
    let mut expected = vec!["link-out.wasm", "sparse.wasm", "writable.wasm"];
    if is_root() {
        // A file another user owns (nobody).
        let planted = dir.path().join("planted.wasm");
        std::fs::write(&planted, &echo).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        expected.insert(1, "planted.wasm");
    }
    let host = PluginHost::new(&HostSettings { cache_dir: None }).unwrap();
    let policy = RulePolicy::default();
    let (_, report) = RuleDir::new(dir.path()).scan(&host, &|m| policy.resolve(m)).unwrap();
    let mut failed: Vec<(String, String)> = report
        .failed
        .iter()
        .map(|(p, why)| (p.file_name().unwrap().to_string_lossy().into_owned(), why.clone()))
        .collect();
    failed.sort();
    let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected, "{failed:?}");
    assert_eq!(report.loaded, ["echo"]);
    let why = |name: &str| failed.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert!(why("link-out.wasm").contains("link out of the rule directory"));
    assert!(why("sparse.wasm").contains("larger than"));
    assert!(why("writable.wasm").contains("writable by group or others"));
    if is_root() {
        assert!(why("planted.wasm").contains("owned by uid 65534"));
    }
}
