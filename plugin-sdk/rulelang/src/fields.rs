//! The fields rules can read, in Falco's and Sigma's names, and how each is
//! read from a packed event. A name Vigil has no source for is refused with
//! the reason, so the rule using it is reported unsupported, never run with
//! a field that is always empty.

use std::borrow::Cow;
use std::cell::OnceCell;

use vigil_event::EventKind;
use vigil_event::packed::{AncestorView, EventView, ProcessView};

pub use crate::text::image_parts;
use crate::text::{falco_cmdline, join};

/// Deepest ancestor the process tree gives (`proc.aname[N]`).
pub const MAX_ANCESTOR: u8 = 8;

/// A field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    EvtType,
    EvtDir,
    EvtTime,
    EvtNum,
    ProcName,
    ProcExe,
    ProcExePath,
    /// Falco's `proc.cmdline`: the name, then the arguments.
    ProcCmdline,
    ProcArgs,
    ProcPid,
    ProcTid,
    ProcPpid,
    ProcCwd,
    /// Ancestor fields: `Some(n)` is ancestor n (0 the process, 1 its
    /// parent); `None` is any ancestor (1 and up).
    AName(Option<u8>),
    APid(Option<u8>),
    AExe(Option<u8>),
    AExePath(Option<u8>),
    ACmdline(Option<u8>),
    UserUid,
    GroupGid,
    /// The controlling terminal's device number (0: none), as Falco's `proc.tty`.
    ProcTty,
    ExeUpperLayer,
    ExeFromMemfd,
    ExeInode,
    UserName,
    GroupName,
    /// The audit login uid (-1: unset, as Falco gives it).
    LoginUid,
    LoginName,
    /// The audit session id (Sigma's `LogonId`).
    SessionId,
    ContainerId,
    ContainerFullId,
    ContainerName,
    ContainerImage,
    ImageRepository,
    ImageTag,
    ImageDigest,
    ContainerPrivileged,
    ContainerType,
    /// The first of its networks' IPv4 addresses (Falco's `container.ip`).
    ContainerIp,
    ContainerNetworkMode,
    /// The pod's primary IP (CRI).
    PodIp,
    ContainerLabel(String),
    ContainerLabels,
    PodName,
    PodNamespace,
    PodUid,
    PodLabel(String),
    PodLabels,
    /// Sigma's `CommandLine`: argv joined with spaces.
    ArgvLine,
    /// Sigma's `ParentCommandLine`.
    ParentArgvLine,
}

/// Fields known to Falco that Vigil has no source for yet, with what is missing.
const NOT_YET: &[(&str, &str)] = &[
    ("proc.sid", "the POSIX session id is not collected yet (the audit session is Sigma's LogonId)"),
    ("proc.sname", "the session leader is not collected yet"),
    ("proc.vpid", "the pid inside the container's pid namespace is not collected yet"),
    ("proc.vpgid", "process groups are not collected yet"),
    ("proc.pgid", "process groups are not collected yet"),
    ("proc.is_exe_writable", "whether the process may write its executable is not computed"),
    ("proc.env", "the environment is not collected"),
    ("proc.loginshellid", "login shells are not tracked"),
];

impl Field {
    /// The field named `name` (with its `[arg]`, if any), or why it cannot be read.
    pub fn falco(name: &str, arg: Option<&str>) -> Result<Field, String> {
        let index = |arg: Option<&str>| -> Result<Option<u8>, String> {
            match arg {
                None => Ok(None),
                Some(a) => match a.trim().parse::<u8>() {
                    Ok(n) if n <= MAX_ANCESTOR => Ok(Some(n)),
                    _ => Err(format!("{name}[{a}]: Vigil keeps ancestors 0 to {MAX_ANCESTOR}")),
                },
            }
        };
        let no_arg = |f: Field| -> Result<Field, String> {
            match arg {
                None => Ok(f),
                Some(a) => Err(format!("field {name} takes no argument (got [{a}])")),
            }
        };
        let key = |f: fn(String) -> Field| -> Result<Field, String> {
            match arg {
                Some(a) if !a.is_empty() => Ok(f(a.trim_matches(|c| c == '"' || c == '\'').to_string())),
                _ => Err(format!("field {name} needs a key, e.g. {name}[app]")),
            }
        };
        Ok(match name {
            "evt.type" => no_arg(Field::EvtType)?,
            "evt.dir" => no_arg(Field::EvtDir)?,
            "evt.time" | "evt.rawtime" | "evt.datetime" => no_arg(Field::EvtTime)?,
            "evt.num" => no_arg(Field::EvtNum)?,
            "proc.name" => no_arg(Field::ProcName)?,
            "proc.exe" => no_arg(Field::ProcExe)?,
            "proc.exepath" => no_arg(Field::ProcExePath)?,
            "proc.cmdline" => no_arg(Field::ProcCmdline)?,
            "proc.args" => no_arg(Field::ProcArgs)?,
            "proc.pid" => no_arg(Field::ProcPid)?,
            "proc.tid" | "thread.tid" => no_arg(Field::ProcTid)?,
            "proc.ppid" => no_arg(Field::ProcPpid)?,
            "proc.cwd" => no_arg(Field::ProcCwd)?,
            "proc.pname" => no_arg(Field::AName(Some(1)))?,
            "proc.pexe" => no_arg(Field::AExe(Some(1)))?,
            "proc.pexepath" => no_arg(Field::AExePath(Some(1)))?,
            "proc.pcmdline" => no_arg(Field::ACmdline(Some(1)))?,
            "proc.aname" => Field::AName(index(arg)?),
            "proc.apid" => Field::APid(index(arg)?),
            "proc.aexe" => Field::AExe(index(arg)?),
            "proc.aexepath" => Field::AExePath(index(arg)?),
            "proc.acmdline" => Field::ACmdline(index(arg)?),
            "user.uid" => no_arg(Field::UserUid)?,
            "group.gid" => no_arg(Field::GroupGid)?,
            "proc.tty" => no_arg(Field::ProcTty)?,
            "proc.is_exe_upper_layer" => no_arg(Field::ExeUpperLayer)?,
            "proc.is_exe_from_memfd" => no_arg(Field::ExeFromMemfd)?,
            "proc.exe_ino" => no_arg(Field::ExeInode)?,
            "user.name" => no_arg(Field::UserName)?,
            "group.name" => no_arg(Field::GroupName)?,
            "user.loginuid" => no_arg(Field::LoginUid)?,
            "user.loginname" => no_arg(Field::LoginName)?,
            "container.id" => no_arg(Field::ContainerId)?,
            "container.full_id" => no_arg(Field::ContainerFullId)?,
            "container.name" => no_arg(Field::ContainerName)?,
            "container.image" => no_arg(Field::ContainerImage)?,
            "container.image.repository" => no_arg(Field::ImageRepository)?,
            "container.image.tag" => no_arg(Field::ImageTag)?,
            "container.image.digest" => no_arg(Field::ImageDigest)?,
            "container.privileged" => no_arg(Field::ContainerPrivileged)?,
            "container.type" => no_arg(Field::ContainerType)?,
            "container.ip" => no_arg(Field::ContainerIp)?,
            "container.network_mode" => no_arg(Field::ContainerNetworkMode)?,
            "k8s.pod.ip" => no_arg(Field::PodIp)?,
            "container.label" => key(Field::ContainerLabel)?,
            "container.labels" => no_arg(Field::ContainerLabels)?,
            "k8s.pod.name" => no_arg(Field::PodName)?,
            "k8s.ns.name" => no_arg(Field::PodNamespace)?,
            "k8s.pod.uid" | "k8s.pod.id" => no_arg(Field::PodUid)?,
            "k8s.pod.label" => key(Field::PodLabel)?,
            "k8s.pod.labels" => no_arg(Field::PodLabels)?,
            _ => {
                if let Some((_, why)) = NOT_YET.iter().find(|(n, _)| *n == name) {
                    return Err(format!("field {name}: {why}"));
                }
                let class = name.split('.').next().unwrap_or(name);
                return Err(match class {
                    "fd" | "fs" => format!("field {name}: file and socket events are not collected"),
                    "evt" => format!("field {name}: syscall arguments are not collected"),
                    "ka" | "jevt" | "ct" | "gcp" | "okta" | "github" | "k8saudit" => {
                        format!("field {name} belongs to a plugin source Vigil does not have")
                    }
                    _ => format!("field {name} has no source in Vigil"),
                });
            }
        })
    }

    /// Sigma's `process_creation` field `name`, or why it cannot be read.
    pub fn sigma(name: &str) -> Result<Field, String> {
        Ok(match name {
            "Image" => Field::ProcExePath,
            "CommandLine" => Field::ArgvLine,
            "ParentImage" => Field::AExePath(Some(1)),
            "ParentCommandLine" => Field::ParentArgvLine,
            "CurrentDirectory" => Field::ProcCwd,
            "ProcessId" => Field::ProcPid,
            "ParentProcessId" => Field::ProcPpid,
            "User" => Field::UserName,
            "LogonId" => Field::SessionId,
            "OriginalFileName" => return Err("field OriginalFileName: Linux executables have no such name".into()),
            _ => return Err(format!("field {name} has no source in Vigil's process events")),
        })
    }

    /// True for fields whose values compare as numbers.
    pub fn numeric(&self) -> bool {
        matches!(
            self,
            Field::EvtTime
                | Field::EvtNum
                | Field::ProcPid
                | Field::ProcTid
                | Field::ProcPpid
                | Field::APid(_)
                | Field::UserUid
                | Field::GroupGid
                | Field::ProcTty
                | Field::ExeInode
                | Field::LoginUid
                | Field::SessionId
        )
    }

    /// The slot of this field's cached value in [`EventCtx`]: every field
    /// without a free-form key, read once per event however many rules read it.
    fn cache_slot(&self) -> Option<usize> {
        let ancestor = |base: usize, n: &Option<u8>| match n {
            Some(n) => base + *n as usize,
            None => base + MAX_ANCESTOR as usize + 1,
        };
        Some(match self {
            Field::ProcCmdline => 0,
            Field::ProcArgs => 1,
            Field::ArgvLine => 2,
            Field::ParentArgvLine => 3,
            Field::ProcName => 4,
            Field::ProcExe => 5,
            Field::ProcExePath => 6,
            Field::ProcCwd => 7,
            Field::ContainerId => 8,
            Field::ContainerFullId => 9,
            Field::ContainerName => 10,
            Field::ContainerImage => 11,
            Field::ImageRepository => 12,
            Field::ImageTag => 13,
            Field::ImageDigest => 14,
            Field::ContainerType => 15,
            Field::PodName => 16,
            Field::PodNamespace => 17,
            Field::PodUid => 18,
            Field::AName(n) => ancestor(19, n),
            Field::AExe(n) => ancestor(29, n),
            Field::AExePath(n) => ancestor(39, n),
            Field::ACmdline(n) => ancestor(49, n),
            Field::APid(None) => 59,
            _ => return None,
        })
    }
}

const CACHED: usize = 60;

/// A field's value in one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// The event does not carry it (Falco: every comparison is false).
    Missing,
    Str(Cow<'a, str>),
    Num(i64),
    Bool(bool),
    /// Several values (any ancestor, all labels): a comparison holds when
    /// it holds for one of them.
    Many(Vec<Cow<'a, str>>),
}

impl<'v> Value<'v> {
    /// The value lowercased, for the case-insensitive operators (borrowed
    /// still when it has no uppercase letter).
    pub fn lowercase(self) -> Value<'v> {
        let lower = |s: Cow<'v, str>| -> Cow<'v, str> {
            if s.bytes().any(|b| b.is_ascii_uppercase()) || !s.is_ascii() { Cow::Owned(s.to_lowercase()) } else { s }
        };
        match self {
            Value::Str(s) => Value::Str(lower(s)),
            Value::Many(v) => Value::Many(v.into_iter().map(lower).collect()),
            other => other,
        }
    }

    /// The value as text, as an alert's output shows it (`<NA>` when missing).
    pub fn render(&self) -> String {
        match self {
            Value::Missing => "<NA>".into(),
            Value::Str(s) => s.to_string(),
            Value::Num(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Many(v) => v.join(","),
        }
    }
}

/// One event being evaluated, with the strings built from it cached so
/// that a hundred rules reading `proc.cmdline` build it once.
pub struct EventCtx<'a> {
    pub view: EventView<'a>,
    pub kind: Option<EventKind>,
    process: Option<ProcessView<'a>>,
    cache: [OnceCell<Value<'a>>; CACHED],
    /// Lowercased values, for the case-insensitive operators (made on first use).
    lower: OnceCell<Box<[OnceCell<Value<'a>>; CACHED]>>,
    /// Results of shared checks: 0 not computed, 1 false, 2 true.
    memo: std::cell::RefCell<Vec<u8>>,
    /// Which slots of `cache` and `lower` hold a value (bit per slot), so
    /// [`reset`](Self::reset) clears only those.
    filled: std::cell::Cell<u64>,
    lower_filled: std::cell::Cell<u64>,
}

impl<'a> EventCtx<'a> {
    pub fn new(view: EventView<'a>) -> Self {
        EventCtx {
            kind: view.kind(),
            process: view.process(),
            view,
            cache: [const { OnceCell::new() }; CACHED],
            lower: OnceCell::new(),
            memo: Default::default(),
            filled: Default::default(),
            lower_filled: Default::default(),
        }
    }

    /// Makes this context the next event's, keeping its allocations (one
    /// context per batch instead of one per event).
    pub fn reset(&mut self, view: EventView<'a>) {
        let mut bits = self.filled.replace(0);
        while bits != 0 {
            let slot = bits.trailing_zeros() as usize;
            self.cache[slot].take();
            bits &= bits - 1;
        }
        let mut bits = self.lower_filled.replace(0);
        if let Some(lower) = self.lower.get_mut() {
            while bits != 0 {
                let slot = bits.trailing_zeros() as usize;
                lower[slot].take();
                bits &= bits - 1;
            }
        }
        self.memo.get_mut().clear();
        self.kind = view.kind();
        self.process = view.process();
        self.view = view;
    }

    /// The result of shared check `slot`, computed by `eval` the first time.
    pub fn memo(&self, slot: u32, eval: impl FnOnce() -> bool) -> bool {
        let slot = slot as usize;
        if let Some(&v) = self.memo.borrow().get(slot)
            && v != 0
        {
            return v == 2;
        }
        let result = eval();
        let mut memo = self.memo.borrow_mut();
        if memo.len() <= slot {
            memo.resize(slot + 1, 0);
        }
        memo[slot] = 1 + u8::from(result);
        result
    }

    /// The value of `field` in this event.
    pub fn get(&self, field: &Field) -> Value<'_> {
        match field.cache_slot() {
            Some(slot) => reborrow(self.cache[slot].get_or_init(|| {
                self.filled.set(self.filled.get() | 1 << slot);
                self.extract(field)
            })),
            None => self.extract(field),
        }
    }

    /// The value of `field`, lowercased.
    pub fn get_lower(&self, field: &Field) -> Value<'_> {
        match field.cache_slot() {
            Some(slot) => reborrow(
                self.lower.get_or_init(|| Box::new([const { OnceCell::new() }; CACHED]))[slot].get_or_init(|| {
                    self.lower_filled.set(self.lower_filled.get() | 1 << slot);
                    owned(self.get(field).lowercase())
                }),
            ),
            None => self.extract(field).lowercase(),
        }
    }

    fn extract(&self, field: &Field) -> Value<'a> {
        let kind = self.kind;
        let p = self.process;
        let c = self.view.container();
        let pod = self.view.pod();
        let s = |v: &'a str| Value::Str(Cow::Borrowed(v));
        match field {
            Field::EvtType | Field::EvtDir => kind_field(field, kind),
            Field::EvtTime => Value::Num(self.view.time_ns() as i64),
            Field::EvtNum => Value::Num(self.view.id() as i64),
            Field::ContainerId => match c {
                Some(c) => s(c.short_id()),
                None if p.is_some() => s("host"),
                None => Value::Missing,
            },
            Field::ContainerFullId => match c {
                Some(c) => s(c.id()),
                None if p.is_some() => s("host"),
                None => Value::Missing,
            },
            Field::ContainerName => match c {
                Some(c) => s(c.name()),
                None if p.is_some() => s("host"),
                None => Value::Missing,
            },
            Field::ContainerImage => c.map_or(Value::Missing, |c| non_empty(c.image())),
            Field::ImageRepository => c.map_or(Value::Missing, |c| non_empty(image_parts(c.image()).0)),
            Field::ImageTag => c.map_or(Value::Missing, |c| non_empty(image_parts(c.image()).1)),
            Field::ImageDigest => c.map_or(Value::Missing, |c| {
                if !c.image_digest().is_empty() { s(c.image_digest()) } else { non_empty(image_parts(c.image()).2) }
            }),
            Field::ContainerPrivileged => c.map_or(Value::Missing, |c| Value::Bool(c.privileged())),
            Field::ContainerType => c.map_or(Value::Missing, |c| s(c.runtime().name())),
            Field::ContainerIp => {
                c.and_then(|c| c.networks().map(|n| n.ip).find(|ip| !ip.is_empty())).map_or(Value::Missing, s)
            }
            Field::ContainerNetworkMode => c.map_or(Value::Missing, |c| non_empty(c.network_mode())),
            Field::PodIp => pod.and_then(|p| p.ips().next()).map_or(Value::Missing, non_empty),
            Field::ContainerLabel(k) => c.and_then(|c| c.label(k)).map_or(Value::Missing, s),
            Field::ContainerLabels => c.map_or(Value::Missing, |c| {
                Value::Many(c.labels().map(|(k, v)| Cow::Owned(format!("{k}:{v}"))).collect())
            }),
            Field::PodName => pod.map_or(Value::Missing, |p| s(p.name())),
            Field::PodNamespace => pod.map_or(Value::Missing, |p| s(p.namespace())),
            Field::PodUid => pod.map_or(Value::Missing, |p| s(p.uid())),
            Field::PodLabel(k) => pod.and_then(|p| p.label(k)).map_or(Value::Missing, s),
            Field::PodLabels => pod.map_or(Value::Missing, |p| {
                Value::Many(p.labels().map(|(k, v)| Cow::Owned(format!("{k}:{v}"))).collect())
            }),
            _ => match p {
                Some(p) => process_field(field, p),
                None => Value::Missing,
            },
        }
    }
}

/// `evt.type` and `evt.dir` of an event of `kind`.
pub fn kind_field(field: &Field, kind: Option<EventKind>) -> Value<'static> {
    let s = |v: &'static str| Value::Str(Cow::Borrowed(v));
    match (field, kind) {
        (_, None) => Value::Missing,
        (Field::EvtType, Some(EventKind::ProcessExec)) => s("execve"),
        (Field::EvtType, Some(EventKind::ProcessFork)) => s("clone"),
        (Field::EvtType, Some(EventKind::ProcessExit)) => s("procexit"),
        (Field::EvtType, Some(EventKind::ContainerStart)) => s("container"),
        (Field::EvtType, Some(k)) => s(k.name()),
        (Field::EvtDir, Some(EventKind::ProcessExit)) => s(">"),
        (Field::EvtDir, Some(_)) => s("<"),
        _ => Value::Missing,
    }
}

fn process_field<'a>(field: &Field, p: ProcessView<'a>) -> Value<'a> {
    let s = |v: &'a str| Value::Str(Cow::Borrowed(v));
    match field {
        Field::ProcName => s(p.comm()),
        Field::ProcExe => p.arg(0).map_or(Value::Missing, s),
        Field::ProcExePath => non_empty(p.exe()),
        Field::ProcCmdline => Value::Str(Cow::Owned(falco_cmdline(p.comm(), p.argv().skip(1)))),
        Field::ProcArgs => Value::Str(Cow::Owned(join(p.argv().skip(1)))),
        Field::ArgvLine => Value::Str(Cow::Owned(join(p.argv()))),
        Field::ParentArgvLine => p.parent().map_or(Value::Missing, |a| Value::Str(Cow::Owned(join(a.argv)))),
        Field::ProcPid => Value::Num(p.tgid() as i64),
        Field::ProcTid => Value::Num(p.pid() as i64),
        Field::ProcPpid => Value::Num(p.ppid() as i64),
        Field::ProcCwd => non_empty(p.cwd()),
        Field::UserUid => Value::Num(p.uid() as i64),
        Field::GroupGid => Value::Num(p.gid() as i64),
        Field::ProcTty => Value::Num(p.tty().map_or(0, |(dev, _)| dev as i64)),
        Field::ExeUpperLayer => Value::Bool(p.exe_upper_layer()),
        Field::ExeFromMemfd => Value::Bool(p.exe_memfd()),
        Field::ExeInode => Value::Num(p.exe_inode() as i64),
        Field::UserName => non_empty(p.user()),
        Field::GroupName => non_empty(p.group()),
        Field::LoginUid => Value::Num(p.login_uid().map_or(-1, i64::from)),
        Field::LoginName => non_empty(p.login_user()),
        Field::SessionId => p.session_id().map_or(Value::Missing, |s| Value::Num(s.into())),
        Field::AName(n) => ancestor_field(p, *n, |a| s(a.comm), || s(p.comm())),
        Field::APid(n) => ancestor_field(p, *n, |a| Value::Num(a.pid as i64), || Value::Num(p.tgid() as i64)),
        Field::AExe(n) => ancestor_field(
            p,
            *n,
            |a| a.argv.clone().next().map_or(Value::Missing, s),
            || p.arg(0).map_or(Value::Missing, s),
        ),
        Field::AExePath(n) => ancestor_field(p, *n, |a| non_empty(a.exe), || non_empty(p.exe())),
        Field::ACmdline(n) => ancestor_field(
            p,
            *n,
            |a| Value::Str(Cow::Owned(falco_cmdline(a.comm, a.argv.skip(1)))),
            || Value::Str(Cow::Owned(falco_cmdline(p.comm(), p.argv().skip(1)))),
        ),
        _ => Value::Missing,
    }
}

/// Ancestor `n` (0 the process itself) or, for `None`, every ancestor.
fn ancestor_field<'a>(
    p: ProcessView<'a>,
    n: Option<u8>,
    of: impl Fn(AncestorView<'a>) -> Value<'a>,
    this: impl Fn() -> Value<'a>,
) -> Value<'a> {
    match n {
        Some(0) => this(),
        Some(n) => p.ancestors().nth(n as usize - 1).map_or(Value::Missing, of),
        None => {
            let mut all = Vec::new();
            for a in p.ancestors() {
                match of(a) {
                    Value::Str(s) => all.push(s),
                    Value::Num(n) => all.push(Cow::Owned(n.to_string())),
                    _ => {}
                }
            }
            if all.is_empty() { Value::Missing } else { Value::Many(all) }
        }
    }
}

/// A cached value, lent out.
fn reborrow<'s>(v: &'s Value<'_>) -> Value<'s> {
    match v {
        Value::Missing => Value::Missing,
        Value::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
        Value::Num(n) => Value::Num(*n),
        Value::Bool(b) => Value::Bool(*b),
        Value::Many(v) => Value::Many(v.iter().map(|s| Cow::Borrowed(s.as_ref())).collect()),
    }
}

/// `v` owning its strings (to be cached beside the event).
fn owned(v: Value<'_>) -> Value<'static> {
    match v {
        Value::Missing => Value::Missing,
        Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        Value::Num(n) => Value::Num(n),
        Value::Bool(b) => Value::Bool(b),
        Value::Many(v) => Value::Many(v.into_iter().map(|s| Cow::Owned(s.into_owned())).collect()),
    }
}

fn non_empty(s: &str) -> Value<'_> {
    if s.is_empty() { Value::Missing } else { Value::Str(Cow::Borrowed(s)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_not_yet_fields_say_why() {
        assert!(Field::falco("proc.sid", None).unwrap_err().contains("session"));
        assert!(Field::falco("fd.name", None).unwrap_err().contains("file and socket"));
        assert!(Field::falco("proc.aname", Some("9")).is_err());
        assert_eq!(Field::falco("proc.aname", Some("2")).unwrap(), Field::AName(Some(2)));
        assert_eq!(Field::falco("container.label", Some("app")).unwrap(), Field::ContainerLabel("app".into()));
        assert_eq!(Field::sigma("User").unwrap(), Field::UserName);
    }
}
