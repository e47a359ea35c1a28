//! Building events and evaluating rule files over them, for tests and
//! benchmarks (natively, without the daemon or Wasm).

use std::sync::Arc;

use vigil_event::packed::{BatchView, encode_batch};
use vigil_event::{Ancestor, Container, Event, EventKind, Pod, Process, Runtime};

use crate::fields::EventCtx;
use crate::{CorrelationState, RuleSet, SourceFile};

/// An exec of `exe` with `argv`, by uid 0, with a `bash` parent on the host.
pub fn exec(exe: &str, argv: &[&str]) -> Event {
    let comm: String = exe.rsplit('/').next().unwrap_or(exe).chars().take(15).collect();
    Event {
        id: 1,
        time_ns: 1_700_000_000_000_000_000,
        process: Some(Process {
            pid: 4242,
            tgid: 4242,
            ppid: 4000,
            comm,
            exe: exe.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ancestry: vec![ancestor(4000, "/bin/bash", &["bash"]), ancestor(1, "/sbin/init", &["/sbin/init"])],
            ..Default::default()
        }),
        ..Event::new(EventKind::ProcessExec)
    }
}

/// An ancestor entry (`comm` from the exe's base name, cut to 15 bytes).
pub fn ancestor(pid: u32, exe: &str, argv: &[&str]) -> Ancestor {
    let comm: String = exe.rsplit('/').next().unwrap_or(exe).chars().take(15).collect();
    Ancestor {
        pid,
        comm: Arc::from(comm.as_str()),
        exe: Arc::from(exe),
        argv: argv.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
    }
}

/// Puts `event` in a Docker container `name` of `image`, in pod `pod` of namespace `ns` when given.
pub fn in_container(mut event: Event, name: &str, image: &str, pod: Option<(&str, &str)>) -> Event {
    event.container = Some(Arc::new(Container {
        id: "3f2a9c1d7e8b".repeat(6)[..64].to_string(),
        name: name.into(),
        image: image.into(),
        runtime: Runtime::Docker,
        labels: vec![("app".into(), name.into())],
        ..Default::default()
    }));
    event.pod = pod.map(|(pod, ns)| {
        Arc::new(Pod {
            name: pod.into(),
            namespace: ns.into(),
            uid: "uid-1".into(),
            labels: vec![("app".into(), pod.into())],
            ..Default::default()
        })
    });
    event
}

/// Replaces the process's ancestry (parent first).
pub fn with_parents(mut event: Event, parents: Vec<Ancestor>) -> Event {
    if let Some(p) = event.process.as_mut() {
        p.ppid = parents.first().map_or(0, |a| a.pid);
        p.ancestry = parents;
    }
    event
}

/// Loads `files` (name, text) and panics on file-level errors.
pub fn load(files: &[(&str, &str)]) -> RuleSet {
    let files: Vec<SourceFile> = files.iter().map(|(n, t)| SourceFile::new(*n, *t)).collect();
    let (set, report) = RuleSet::load(&files);
    for f in &report.files {
        assert!(f.error.is_none(), "{}: {:?}", f.name, f.error);
    }
    set
}

/// The names of the rules of `set` that match `event`.
pub fn fired(set: &RuleSet, event: &Event) -> Vec<String> {
    let mut bytes = Vec::new();
    encode_batch([event], &mut bytes);
    let batch = BatchView::new(&bytes).expect("own encoding");
    set.matches(batch.get(0).expect("one event")).into_iter().map(|m| m.name.to_string()).collect()
}

/// What the interpreter component alerts for `event`, in order: the names
/// of the rules that match and are not silent, then the correlations the
/// event completes (their groups in `state`).
pub fn alerts(set: &RuleSet, state: &mut CorrelationState, event: &Event) -> Vec<String> {
    let mut bytes = Vec::new();
    encode_batch([event], &mut bytes);
    let batch = BatchView::new(&bytes).expect("own encoding");
    let ctx = EventCtx::new(batch.get(0).expect("one event"));
    let (mut hits, mut completed) = (Vec::new(), Vec::new());
    set.matching(&ctx, &mut hits);
    let mut out: Vec<String> = hits
        .iter()
        .filter(|&&h| !set.rules()[h as usize].silent)
        .map(|&h| set.rules()[h as usize].name.clone())
        .collect();
    state.observe(set.correlations(), &hits, &ctx, &mut completed);
    out.extend(completed.into_iter().map(|m| m.name.to_string()));
    out
}
