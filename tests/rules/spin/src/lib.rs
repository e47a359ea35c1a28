//! Test rule `spin`: loops forever on an exec whose argv contains "spin",
//! otherwise alerts on execs of `/bin/spin-ok`. Proves call deadlines.

use vigil_sdk::prelude::*;

/// Hangs on purpose.
#[rule(id = "spin", subscribe = [ProcessExec], tags = ["test"])]
pub fn detect(event: &Event) -> Option<Alert> {
    let p = event.process()?;
    if p.argv_contains("spin") {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    (p.exe() == "/bin/spin-ok").then(|| Alert::notice("spin rule alive"))
}
