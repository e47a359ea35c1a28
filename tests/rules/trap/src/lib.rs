//! Test rule `trap`: panics (a trap) on an exec whose argv contains "trap",
//! otherwise alerts on execs of `/bin/trap-ok`.

use vigil_sdk::prelude::*;

/// Traps on purpose.
#[rule(id = "trap", subscribe = [ProcessExec], tags = ["test"])]
pub fn detect(event: &Event) -> Option<Alert> {
    let p = event.process()?;
    if p.argv_contains("trap") {
        panic!("trap rule asked to trap");
    }
    (p.exe() == "/bin/trap-ok").then(|| Alert::notice("trap rule alive"))
}
