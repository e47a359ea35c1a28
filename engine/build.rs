//! Builds the eBPF programs of `engine-ebpf/` (with aya-build, for the BPF
//! target, with bpf-linker) so that one `cargo build` makes the daemon with
//! its kernel side embedded.
//!
//! Without bpf-linker the daemon is built without the programs (a warning
//! says so) and its eBPF source reports itself unavailable at run time,
//! unless `VIGIL_REQUIRE_EBPF=1` (set by the project's scripts and CI), which
//! makes a missing kernel side a build error.

use std::path::{Path, PathBuf};

const PROGRAMS: &str = "vigil-ebpf";

fn main() {
    println!("cargo:rerun-if-env-changed=VIGIL_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let required = std::env::var("VIGIL_REQUIRE_EBPF").is_ok_and(|v| v == "1");

    if !on_path("bpf-linker") {
        if required {
            panic!("bpf-linker is not on PATH and VIGIL_REQUIRE_EBPF=1: run ./scripts/setup.sh");
        }
        println!(
            "cargo:warning=bpf-linker not found: building vigil without its eBPF programs \
             (the eBPF source will be unavailable; ./scripts/setup.sh installs bpf-linker)"
        );
        std::fs::write(out_dir.join(PROGRAMS), b"").expect("write an empty program object");
        return;
    }

    // Stable rustc builds the BPF target's `core` with `-Z build-std`, which
    // needs RUSTC_BOOTSTRAP in the nested cargo that aya-build starts.
    // SAFETY: build scripts are single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    let package = aya_build::Package { name: PROGRAMS, root_dir: "../engine-ebpf", ..Default::default() };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
        panic!("building the eBPF programs failed: {e:#}");
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
