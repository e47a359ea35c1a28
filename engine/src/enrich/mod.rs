//! What the engine adds to raw events: the process tree (ancestry, and the
//! exe/argv of processes that started before the daemon) and each event's
//! container and pod from its cgroup, completed by what the container runtimes
//! say (names, images, labels, pods); events of containers not yet described
//! are held briefly ([`hold`]).

pub mod cgroup_path;
pub mod cgroups;
pub mod containers;
pub mod hold;
pub mod process_tree;
