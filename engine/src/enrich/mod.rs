//! What the engine adds to raw events: the process tree (ancestry, and the
//! exe/argv of processes that started before the daemon) and each event's
//! container and pod from its cgroup. Metadata from the container runtimes
//! (names, images, labels) plugs in here.

pub mod cgroup_path;
pub mod cgroups;
pub mod containers;
pub mod process_tree;
