//! The packed encoding round-trips, and bad bytes are refused, not panicked on.

use super::*;
use crate::model::*;
use std::sync::Arc;

fn full_event() -> Event {
    Event {
        id: 42,
        time_ns: 1_700_000_000_000_000_000,
        kind: EventKind::ProcessExec,
        process: Some(Process {
            pid: 10,
            tgid: 11,
            ppid: 12,
            uid: 1000,
            gid: 1001,
            comm: "bash".into(),
            exe: "/usr/bin/bash".into(),
            argv: vec!["bash".into(), "-c".into(), "echo ü".into()],
            argv_truncated: true,
            cwd: "/root".into(),
            start_time_ns: 99,
            cgroup_id: 4242,
            namespaces: Namespaces::from_array([1, 2, 3, 4, 5, 6, 7]),
            ancestry: vec![
                Ancestor {
                    pid: 12,
                    comm: "sshd".into(),
                    exe: "/usr/sbin/sshd".into(),
                    argv: Arc::from(["sshd:".to_string(), "alice".to_string()]),
                },
                Ancestor { pid: 1, comm: "init".into(), exe: "/sbin/init".into(), argv: Arc::from([]) },
            ],
            cwd_truncated: true,
            script: "/tmp/run.sh".into(),
            exe_file: ExeFile {
                inode: 1234,
                device: (8 << 32) | 1,
                mode: 0o104755,
                upper_layer: true,
                memfd: true,
                unlinked: false,
            },
            tty: Some(Tty::of(136, 3, true)),
            login_uid: Some(1000),
            session_id: Some(7),
            user: "alice".into(),
            group: "staff".into(),
            login_user: "alice".into(),
        }),
        container: Some(Arc::new(Container {
            id: "a".repeat(64),
            name: "web".into(),
            image: "nginx:1.25".into(),
            image_digest: "sha256:abc".into(),
            runtime: Runtime::Podman,
            labels: vec![("app".into(), "web".into()), ("tier".into(), "front".into())],
            pid: 77,
            privileged: true,
            started_at_ns: 5,
            network_mode: "bridge".into(),
            networks: vec![
                Network {
                    name: "bridge".into(),
                    ip: "172.17.0.2".into(),
                    prefix_len: 16,
                    ipv6: "fd00::2".into(),
                    ipv6_prefix_len: 64,
                    mac: "02:42:ac:11:00:02".into(),
                    gateway: "172.17.0.1".into(),
                },
                Network { name: "backend".into(), ..Default::default() },
            ],
            ports: vec![Port {
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                host_port: 65535,
            }],
            runs_as_root: Some(false),
        })),
        pod: Some(Arc::new(Pod {
            name: "web-0".into(),
            namespace: "prod".into(),
            uid: "uid-1".into(),
            sandbox: true,
            labels: vec![("k".into(), "v".into())],
            ips: vec!["10.0.0.7".into(), "fd00::7".into()],
        })),
        cgroup: Some(Cgroup { id: 8, path: "/docker/x".into() }),
        exit_code: Some(-9),
        lost: Some(Lost { count: 3, reason: "ring".into() }),
        copy_path: Some("/etc/cron.d/job".into()),
        truncated: true,
    }
}

#[test]
fn every_field_round_trips() {
    let e = full_event();
    let mut buf = Vec::new();
    encode_batch([&e, &Event::new(EventKind::ProcessFork)], &mut buf);
    let batch = BatchView::new(&buf).unwrap();
    assert_eq!(batch.len(), 2);
    let v = batch.get(0).unwrap();
    assert_eq!(v.kind(), Some(EventKind::ProcessExec));
    assert_eq!(v.id(), 42);
    assert_eq!(v.time_ns(), e.time_ns);
    assert_eq!(v.exit_code(), Some(-9));
    assert_eq!(v.lost(), Some((3, "ring")));
    assert_eq!(v.cgroup(), Some((8, "/docker/x")));
    let p = v.process().unwrap();
    assert_eq!((p.pid(), p.tgid(), p.ppid(), p.uid(), p.gid()), (10, 11, 12, 1000, 1001));
    assert_eq!((p.comm(), p.exe(), p.cwd()), ("bash", "/usr/bin/bash", "/root"));
    assert_eq!(p.argv().collect::<Vec<_>>(), ["bash", "-c", "echo ü"]);
    assert!(p.argv_truncated());
    assert_eq!(p.start_time_ns(), 99);
    assert_eq!(p.cgroup_id(), 4242);
    assert_eq!(p.namespaces(), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(p.exe_basename(), "bash");
    assert!(p.cwd_truncated());
    assert_eq!(p.script(), "/tmp/run.sh");
    assert_eq!((p.exe_inode(), p.exe_device(), p.exe_mode()), (1234, (8 << 32) | 1, 0o104755));
    assert!(p.exe_setuid_or_setgid() && p.exe_upper_layer() && p.exe_memfd() && !p.exe_unlinked());
    assert!(p.exe_fileless());
    assert_eq!(p.tty(), Some((Tty::encode(136, 3), "pts/3")));
    assert!(p.tty_is_pty());
    assert_eq!((p.login_uid(), p.session_id()), (Some(1000), Some(7)));
    assert_eq!((p.user(), p.group(), p.login_user()), ("alice", "staff", "alice"));
    assert!(!v.is_entrypoint());
    assert_eq!(p.cmdline(), "bash -c echo ü");
    assert!(p.argv_contains("-c") && !p.argv_contains("bash") && p.argv_contains_substr("echo"));
    assert!(p.has_ancestor("sshd") && p.has_ancestor("init") && !p.has_ancestor("bash"));
    assert_eq!(p.arg(2), Some("echo ü"));
    assert!(v.in_container() && v.is(EventKind::ProcessExec));
    let anc: Vec<_> = p.ancestors().collect();
    assert_eq!(anc.len(), 2);
    assert_eq!((anc[1].pid, anc[1].comm, anc[1].exe, anc[1].argv.len()), (1, "init", "/sbin/init", 0));
    assert_eq!(anc[0].argv.clone().collect::<Vec<_>>(), ["sshd:", "alice"]);
    let c = v.container().unwrap();
    assert_eq!(c.id(), "a".repeat(64));
    assert_eq!((c.name(), c.image(), c.image_digest()), ("web", "nginx:1.25", "sha256:abc"));
    assert_eq!(c.runtime(), Runtime::Podman);
    assert_eq!((c.pid(), c.privileged(), c.started_at_ns()), (77, true, 5));
    assert_eq!(c.labels().collect::<Vec<_>>(), [("app", "web"), ("tier", "front")]);
    assert_eq!((c.label("tier"), c.label("nope"), c.short_id()), (Some("front"), None, "aaaaaaaaaaaa"));
    let pod = v.pod().unwrap();
    assert_eq!((pod.name(), pod.namespace(), pod.uid(), pod.sandbox()), ("web-0", "prod", "uid-1", true));
    assert_eq!(pod.labels().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(pod.ips().collect::<Vec<_>>(), ["10.0.0.7", "fd00::7"]);
    assert_eq!(c.network_mode(), "bridge");
    let nets: Vec<_> = c.networks().collect();
    assert_eq!(nets.len(), 2);
    let n = &nets[0];
    assert_eq!((n.name, n.ip, n.prefix_len, n.ipv6, n.ipv6_prefix_len), ("bridge", "172.17.0.2", 16, "fd00::2", 64));
    assert_eq!((n.mac, n.gateway), ("02:42:ac:11:00:02", "172.17.0.1"));
    assert_eq!((nets[1].name, nets[1].ip, nets[1].prefix_len), ("backend", "", 0));
    let ports: Vec<_> = c.ports().collect();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].container_port, ports[0].protocol, ports[0].host_ip, ports[0].host_port),
        (8080, "tcp", "127.0.0.1", 65535)
    );
    assert_eq!(c.runs_as_root(), Some(false));
    assert_eq!(v.copy_path(), Some("/etc/cron.d/job"));
    assert!(v.truncated());

    let bare = batch.get(1).unwrap();
    assert_eq!(bare.kind(), Some(EventKind::ProcessFork));
    assert!(bare.process().is_none() && bare.container().is_none() && bare.pod().is_none());
    assert!(bare.exit_code().is_none() && bare.lost().is_none() && bare.cgroup().is_none());
    assert!(bare.copy_path().is_none() && !bare.truncated());
    let unknown = Event { container: Some(Arc::new(Container::default())), ..Event::new(EventKind::ContainerCopyIn) };
    let mut buf3 = Vec::new();
    encode_batch([&unknown], &mut buf3);
    let u = BatchView::new(&buf3).unwrap().get(0).unwrap();
    assert_eq!(u.kind(), Some(EventKind::ContainerCopyIn));
    let c = u.container().unwrap();
    assert!(
        c.runs_as_root().is_none() && c.networks().len() == 0 && c.ports().len() == 0 && c.network_mode().is_empty()
    );
    let p = batch.get(0).unwrap().process().unwrap();
    let unset = Event { process: Some(Process::default()), ..Event::new(EventKind::ProcessExec) };
    let mut buf2 = Vec::new();
    encode_batch([&unset], &mut buf2);
    let q = BatchView::new(&buf2).unwrap().get(0).unwrap().process().unwrap();
    assert!(q.tty().is_none() && !q.tty_is_pty() && q.login_uid().is_none() && q.session_id().is_none());
    assert!(!q.exe_fileless() && !q.cwd_truncated() && q.script().is_empty() && p.tty().is_some());
    assert!(batch.get(2).is_none());
}

/// A rule built for interface 0.2.0 reads a 0.2.1 batch: every field it
/// knows lies where it was, and its check of each event's header length
/// (288 bytes then) still holds.
#[test]
fn a_rule_of_0_2_0_reads_a_0_2_1_batch() {
    let mut buf = Vec::new();
    encode_batch([&full_event()], &mut buf);
    let off = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
    assert!(off + HEADER_LEN_0_2_0 <= buf.len());
    let rec = &buf[off..];
    let str_at = |slot: usize| {
        let at = STRINGS + 8 * slot;
        let o = u32::from_le_bytes(rec[at..at + 4].try_into().unwrap()) as usize;
        let n = u32::from_le_bytes(rec[at + 4..at + 8].try_into().unwrap()) as usize;
        std::str::from_utf8(&rec[o..o + n]).unwrap()
    };
    assert_eq!((str_at(0), str_at(1), str_at(2), str_at(3)), ("bash", "/usr/bin/bash", "/root", &*"a".repeat(64)));
    assert_eq!(u32::from_le_bytes(rec[PID..PID + 4].try_into().unwrap()), 10);
    // 0.2.1's fields too, below its header length.
    assert!(off + HEADER_LEN_0_2_1 <= buf.len());
    let at = STRINGS_2;
    let o = u32::from_le_bytes(rec[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(&rec[o..o + 11], b"/tmp/run.sh", "script");
}

#[test]
fn records_are_position_independent() {
    let e = full_event();
    let mut records = vec![0xAA; 13]; // junk before the record
    let start = records.len();
    encode_event(&e, &mut records);
    let end = records.len();
    let mut a = Vec::new();
    assemble_batch(&records, [start..end, start..end].into_iter(), &mut a);
    let batch = BatchView::new(&a).unwrap();
    for v in batch.iter() {
        assert_eq!(v.process().unwrap().exe(), "/usr/bin/bash");
        assert_eq!(v.pod().unwrap().name(), "web-0");
    }
}

#[test]
fn bad_bytes_are_refused_not_panicked_on() {
    assert_eq!(BatchView::new(b"VGB").err(), Some(DecodeError::Truncated));
    assert_eq!(BatchView::new(b"XXXX\0\0\0\0").err(), Some(DecodeError::BadMagic));
    let mut buf = Vec::new();
    encode_batch([&full_event()], &mut buf);
    for cut in 0..buf.len() {
        // Truncations that keep every header are readable: strings cut
        // off read as "", never a panic.
        if let Ok(b) = BatchView::new(&buf[..cut]) {
            for v in b.iter() {
                let p = v.process().unwrap();
                let _ = (p.exe(), p.argv().count(), p.ancestors().count());
                let _ = v.container().map(|c| (c.labels().count(), c.networks().count(), c.ports().count()));
            }
        }
    }
    // Offsets pointing past the end.
    let mut bad = buf.clone();
    bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(BatchView::new(&bad).err(), Some(DecodeError::BadOffset(0)));
}

#[test]
fn huge_counts_are_cut_to_what_the_bytes_hold() {
    let mut buf = Vec::new();
    encode_batch([&full_event()], &mut buf);
    // The batch's event count.
    let mut bad = buf.clone();
    bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(BatchView::new(&bad).err(), Some(DecodeError::Truncated));
    // Each list's count.
    let header = 8 + 4;
    for slot in
        [List::Argv, List::Ancestry, List::ContainerLabels, List::PodLabels, List::Networks, List::Ports, List::PodIps]
    {
        let mut bad = buf.clone();
        let at = header + slot.at() + 4;
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let batch = BatchView::new(&bad).unwrap();
        let v = batch.get(0).unwrap();
        let p = v.process().unwrap();
        assert!(p.argv().count() < 1000 && p.ancestors().count() < 1000);
        let c = v.container().unwrap();
        assert!(c.labels().count() < 1000 && v.pod().unwrap().labels().count() < 1000);
        assert!(c.networks().count() < 1000 && c.ports().count() < 1000 && v.pod().unwrap().ips().count() < 1000);
    }
}

#[test]
fn empty_batch() {
    let mut buf = Vec::new();
    encode_batch([], &mut buf);
    let b = BatchView::new(&buf).unwrap();
    assert!(b.is_empty());
}

/// The worked example of `docs/packed-layout.md`, byte for byte.
#[test]
fn the_worked_example_of_the_spec_page_holds() {
    let e = Event {
        id: 7,
        time_ns: 1_700_000_000_000_000_000,
        process: Some(Process {
            pid: 42,
            tgid: 42,
            ppid: 1,
            comm: "sh".into(),
            exe: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "id".into()],
            cwd: "/".into(),
            ..Default::default()
        }),
        ..Event::new(EventKind::ProcessExec)
    };
    let mut out = Vec::new();
    encode_batch([&e], &mut out);
    let dump: Vec<String> = out
        .chunks(16)
        .enumerate()
        .map(|(i, c)| format!("{:04x}: {}", i * 16, c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")))
        .collect();
    let page = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/packed-layout.md"));
    let documented: Vec<&str> = page
        .lines()
        .filter(|l| l.len() > 6 && l.as_bytes()[4] == b':' && l[..4].chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    assert_eq!(documented, dump, "docs/packed-layout.md's example is what the encoder writes");
}
