//! Test rule `spin`: loops forever on an exec whose argv contains "spin";
//! works for a while and alerts on `busy N` (N rounds of a loop); otherwise
//! alerts on execs of `/bin/spin-ok`. Proves call deadlines.

use vigil_sdk::prelude::*;

/// Hangs on purpose.
#[rule(id = "spin", subscribe = [ProcessExec], tags = ["test"])]
pub fn detect(event: &Event) -> Option<Alert> {
    let p = event.process()?;
    let mut args = p.args();
    if let (Some("busy"), Some(rounds)) = (args.next(), args.next()) {
        let rounds: u64 = rounds.parse().ok()?;
        let mut x = 0u64;
        for _ in 0..rounds {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        return Some(Alert::notice(format!("spin rule busy for {x} rounds")));
    }
    if p.argv_contains("spin") {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    (p.exe() == "/bin/spin-ok").then(|| Alert::notice("spin rule alive"))
}
