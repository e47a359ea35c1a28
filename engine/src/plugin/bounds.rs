//! Per-event bounds, applied by the dispatcher before an event is packed
//! for rules, whatever its source: no single event can make a rule exceed
//! its memory cap (a pod with megabytes of labels, a replayed event with a
//! huge argv or ancestry). What is over a bound is cut, the event is flagged
//! `truncated` (and `argv_truncated` when its argv was cut), and the rules
//! see the rest of it: an oversized input degrades that one event, never
//! the rules.
//!
//! A container's description is shared by all its events: it is checked
//! once per description, and cut into a copy of its own only when it is
//! over (the last description checked, and its cut copy, are remembered:
//! consecutive events of one container cost one pointer comparison).

use std::sync::Arc;

use vigil_event::{Container, Event, Labels, Pod, Process};

/// Labels kept per container or pod, and the bytes of their keys and values.
pub const MAX_LABELS: usize = 256;
pub const MAX_LABEL_BYTES: usize = 64 << 10;
/// Arguments kept, and their bytes (the eBPF source keeps 1 KiB, the proc
/// connector 4 KiB).
pub const MAX_ARGS: usize = 1024;
pub const MAX_ARGV_BYTES: usize = 16 << 10;
/// Ancestors kept (the process tree gives 8).
pub const MAX_ANCESTORS: usize = 16;
/// Networks and ports kept per container.
pub const MAX_NETWORKS: usize = 32;
pub const MAX_PORTS: usize = 256;
/// Bytes kept of any one string (paths, names, images, label values).
pub const MAX_STRING: usize = 4096;

/// Cuts events to the bounds, remembering the last descriptions checked.
#[derive(Default)]
pub struct Bounds {
    container: Memo<Container>,
    pod: Memo<Pod>,
}

/// The last description checked, and its cut copy if it was over.
struct Memo<T> {
    last: Option<(Arc<T>, Option<Arc<T>>)>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo { last: None }
    }
}

impl<T> Memo<T> {
    /// The cut copy of `d` if it is over the bounds (`within`, `cut`).
    fn bounded(&mut self, d: &Arc<T>, within: fn(&T) -> bool, cut: fn(&T) -> T) -> Option<Arc<T>> {
        if let Some((last, cut_copy)) = &self.last
            && Arc::ptr_eq(last, d)
        {
            return cut_copy.clone();
        }
        let cut_copy = (!within(d)).then(|| Arc::new(cut(d)));
        self.last = Some((d.clone(), cut_copy.clone()));
        cut_copy
    }
}

impl Bounds {
    /// Cuts `e` to the bounds; true when something was cut (`e.truncated`
    /// is then set).
    pub fn apply(&mut self, e: &mut Event) -> bool {
        let mut cut = false;
        if let Some(p) = &mut e.process {
            cut |= bound_process(p);
        }
        if let Some(c) = &e.container
            && let Some(cut_copy) = self.container.bounded(c, container_within, bound_container)
        {
            e.container = Some(cut_copy);
            cut = true;
        }
        if let Some(p) = &e.pod
            && let Some(cut_copy) = self.pod.bounded(p, pod_within, bound_pod)
        {
            e.pod = Some(cut_copy);
            cut = true;
        }
        if let Some(path) = &mut e.copy_path {
            cut |= cut_string(path);
        }
        if let Some(c) = &mut e.cgroup {
            cut |= cut_string(&mut c.path);
        }
        if let Some(l) = &mut e.lost {
            cut |= cut_string(&mut l.reason);
        }
        if cut {
            e.truncated = true;
        }
        cut
    }
}

/// Cuts `s` to [`MAX_STRING`] bytes (at a character boundary); true when cut.
fn cut_string(s: &mut String) -> bool {
    if s.len() <= MAX_STRING {
        return false;
    }
    let mut at = MAX_STRING;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    true
}

fn strings_within<'a>(strings: impl IntoIterator<Item = &'a String>) -> bool {
    strings.into_iter().all(|s| s.len() <= MAX_STRING)
}

/// Cuts argv to [`MAX_ARGS`] and [`MAX_ARGV_BYTES`]; true when cut.
fn bound_argv(argv: &mut Vec<String>) -> bool {
    let mut bytes = 0;
    let keep = argv
        .iter()
        .take(MAX_ARGS)
        .take_while(|a| {
            bytes += a.len();
            bytes <= MAX_ARGV_BYTES
        })
        .count();
    if keep == argv.len() {
        return false;
    }
    argv.truncate(keep);
    true
}

fn bound_process(p: &mut Process) -> bool {
    let mut cut = false;
    if bound_argv(&mut p.argv) {
        p.argv_truncated = true;
        cut = true;
    }
    for s in [&mut p.comm, &mut p.exe, &mut p.cwd, &mut p.script, &mut p.user, &mut p.group, &mut p.login_user] {
        cut |= cut_string(s);
    }
    if let Some(tty) = &mut p.tty {
        cut |= cut_string(&mut tty.name);
    }
    if p.ancestry.len() > MAX_ANCESTORS {
        p.ancestry.truncate(MAX_ANCESTORS);
        cut = true;
    }
    for a in &mut p.ancestry {
        let mut argv = None;
        let bytes: usize = a.argv.iter().map(String::len).sum();
        if a.argv.len() > MAX_ARGS || bytes > MAX_ARGV_BYTES {
            let mut v = a.argv.to_vec();
            bound_argv(&mut v);
            argv = Some(v);
        }
        if let Some(v) = argv {
            a.argv = Arc::from(v);
            cut = true;
        }
        for s in [&mut a.comm, &mut a.exe] {
            if s.len() > MAX_STRING {
                let mut owned = s.to_string();
                cut_string(&mut owned);
                *s = Arc::from(owned);
                cut = true;
            }
        }
    }
    cut
}

fn pod_within(p: &Pod) -> bool {
    labels_within(&p.labels)
        && strings_within([&p.name, &p.namespace, &p.uid])
        && p.ips.len() <= MAX_NETWORKS
        && strings_within(&p.ips)
}

fn bound_pod(p: &Pod) -> Pod {
    let s = |s: &String| {
        let mut s = s.clone();
        cut_string(&mut s);
        s
    };
    Pod {
        name: s(&p.name),
        namespace: s(&p.namespace),
        uid: s(&p.uid),
        sandbox: p.sandbox,
        labels: bounded_labels(&p.labels),
        ips: p.ips.iter().take(MAX_NETWORKS).map(s).collect(),
    }
}

fn labels_within(labels: &Labels) -> bool {
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    labels.len() <= MAX_LABELS && bytes <= MAX_LABEL_BYTES
}

/// The first labels within [`MAX_LABELS`] and [`MAX_LABEL_BYTES`].
fn bounded_labels(labels: &Labels) -> Labels {
    let mut bytes = 0;
    labels
        .iter()
        .take(MAX_LABELS)
        .take_while(|(k, v)| {
            bytes += k.len() + v.len();
            bytes <= MAX_LABEL_BYTES
        })
        .cloned()
        .collect()
}

fn container_within(c: &Container) -> bool {
    labels_within(&c.labels)
        && strings_within([&c.id, &c.name, &c.image, &c.image_digest, &c.network_mode])
        && c.networks.len() <= MAX_NETWORKS
        && c.ports.len() <= MAX_PORTS
        && c.networks.iter().all(|n| strings_within([&n.name, &n.ip, &n.ipv6, &n.mac, &n.gateway]))
        && c.ports.iter().all(|p| strings_within([&p.protocol, &p.host_ip]))
}

/// A copy of `c` within the bounds (its labels copied only as far as kept).
fn bound_container(c: &Container) -> Container {
    let mut c = Container {
        id: c.id.clone(),
        name: c.name.clone(),
        image: c.image.clone(),
        image_digest: c.image_digest.clone(),
        runtime: c.runtime,
        labels: bounded_labels(&c.labels),
        pid: c.pid,
        privileged: c.privileged,
        started_at_ns: c.started_at_ns,
        network_mode: c.network_mode.clone(),
        networks: c.networks.iter().take(MAX_NETWORKS).cloned().collect(),
        ports: c.ports.iter().take(MAX_PORTS).cloned().collect(),
        runs_as_root: c.runs_as_root,
    };
    for s in [&mut c.id, &mut c.name, &mut c.image, &mut c.image_digest, &mut c.network_mode] {
        cut_string(s);
    }
    for n in &mut c.networks {
        for s in [&mut n.name, &mut n.ip, &mut n.ipv6, &mut n.mac, &mut n.gateway] {
            cut_string(s);
        }
    }
    for p in &mut c.ports {
        cut_string(&mut p.protocol);
        cut_string(&mut p.host_ip);
    }
    c
}

#[cfg(test)]
mod tests {
    use vigil_event::{Ancestor, EventKind};

    use super::*;

    fn exec() -> Event {
        let p = Process { argv: vec!["sh".into(), "-c".into(), "id".into()], ..Default::default() };
        Event { process: Some(p), ..Event::new(EventKind::ProcessExec) }
    }

    #[test]
    fn events_within_bounds_are_untouched_and_shared_descriptions_kept() {
        let mut b = Bounds::default();
        let web = Arc::new(Container {
            id: "a".repeat(64),
            labels: vec![("app".into(), "web".into())],
            ..Default::default()
        });
        let mut e = exec();
        e.container = Some(web.clone());
        let before = e.clone();
        assert!(!b.apply(&mut e));
        assert_eq!(e, before);
        assert!(Arc::ptr_eq(e.container.as_ref().unwrap(), &web), "not copied");
    }

    #[test]
    fn a_pod_with_megabytes_of_labels_is_cut_and_flagged() {
        let mut b = Bounds::default();
        let labels: Labels = (0..20_000).map(|i| (format!("key-{i}"), "v".repeat(30))).collect();
        let huge = Arc::new(Container { id: "b".repeat(64), name: "n".repeat(100_000), labels, ..Default::default() });
        let mut e = exec();
        e.container = Some(huge.clone());
        e.pod =
            Some(Arc::new(Pod { labels: vec![("k".into(), "v".repeat(MAX_LABEL_BYTES + 1))], ..Default::default() }));
        assert!(b.apply(&mut e));
        assert!(e.truncated);
        let c = e.container.as_ref().unwrap();
        assert!(c.labels.len() <= MAX_LABELS && c.labels[0].0 == "key-0");
        assert_eq!(c.name.len(), MAX_STRING);
        assert!(e.pod.as_ref().unwrap().labels.is_empty(), "one label over the bytes: none kept");
        assert_eq!(huge.labels.len(), 20_000, "the cache's description is not changed");
    }

    #[test]
    fn argv_and_ancestry_are_cut_and_flagged() {
        let mut b = Bounds::default();
        let mut e = exec();
        let p = e.process.as_mut().unwrap();
        p.argv = (0..5000).map(|i| format!("arg{i}")).collect();
        let long = Ancestor { argv: Arc::from(vec!["x".repeat(MAX_ARGV_BYTES * 2)]), ..Default::default() };
        p.ancestry = vec![long; 40];
        p.cwd = "é".repeat(MAX_STRING);
        assert!(b.apply(&mut e));
        let p = e.process.as_ref().unwrap();
        assert!(e.truncated && p.argv_truncated);
        assert_eq!(p.argv.len(), MAX_ARGS);
        assert_eq!(p.ancestry.len(), MAX_ANCESTORS);
        assert!(p.ancestry[0].argv.is_empty(), "its one argument is over the bytes");
        assert!(p.cwd.len() <= MAX_STRING && p.cwd.chars().all(|c| c == 'é'), "cut at a character boundary");
    }
}
