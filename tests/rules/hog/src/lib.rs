//! Test rule `hog`: allocates without bound on an exec whose argv contains
//! "hog", to hit its memory limit; also tries to read a host file through
//! WASI on "read-host" (which must fail unless a directory is granted), and
//! sleeps an hour on "sleep" (which must not hang the daemon).

use vigil_sdk::prelude::*;

/// Misbehaves on purpose.
#[rule(id = "hog", subscribe = [ProcessExec], tags = ["test"])]
pub fn detect(event: &Event) -> Option<Alert> {
    let p = event.process()?;
    if p.argv_contains("hog") {
        let mut v: Vec<Vec<u8>> = Vec::new();
        loop {
            v.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&v);
        }
    }
    if p.argv_contains("sleep") {
        // With WASI granted this is a blocking poll in host code.
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    if p.argv_contains("read-host") {
        let r = std::fs::read_to_string("/etc/hostname");
        return Some(Alert::critical(format!("host file read: {}", r.is_ok())));
    }
    (p.exe() == "/bin/hog-ok").then(|| Alert::notice("hog rule alive"))
}
