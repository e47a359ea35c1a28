//! What the engine adds to raw events: the process tree (ancestry, and the
//! exe/argv of processes that started before the daemon). Container and pod
//! resolution plugs in here.

pub mod process_tree;
