//! Vigil's bundled rule files (rules/declarative/rules/*.yaml) over the
//! detection corpus (tests/fixtures/detections.toml).
//!
//! Each case's argv is turned into the exec events the kernel would report
//! for it: the command itself, with the parents a real `docker exec` (runc
//! under containerd's shim) or a login shell on the host gives it, and, for
//! `sh -c SCRIPT`, the programs the script runs (split on pipes, lists and
//! substitutions, with redirections, assignments and builtins removed, and
//! wrappers such as `timeout` and `env` run as their own processes). In a
//! container the shell is busybox's: applets it runs without an exec
//! (BUSYBOX_NO_EXEC) give no event, and the others, exec'd through
//! /proc/self/exe, have the comm `exe` and the applet's name only in argv[0],
//! as the kernel reports them (and /dev/shm is noexec there). In a
//! container, only busybox applets (and files the script made) exist, so the
//! children that could not be exec'd there are left out of what an attack is
//! required to fire on; the same for the host with tools that a host may not
//! have. Benign cases are held to every event, present or not.
//!
//! An attack passes when its expected rule fires on one of its events; a
//! benign case when no rule fires on any. All files must load with every rule
//! loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use vigil_event::packed::{BatchView, encode_batch};
use vigil_event::{Ancestor, Container, Event, EventKind, Process, Runtime};
use vigil_rulelang::{RuleSet, SourceFile, Status};

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    #[serde(rename = "where")]
    place: String,
    argv: Vec<String>,
    expect: String,
    tactic: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rule_files() -> Vec<SourceFile> {
    let dir = workspace().join("rules/declarative/rules");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no rule files in {}", dir.display());
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            SourceFile::new(name, std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

fn corpus() -> Vec<Case> {
    let path = workspace().join("tests/fixtures/detections.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    corpus.case
}

mod events;
mod facts;
mod places;
mod shell;

use events::*;
use places::*;
use shell::*;

// ---------------------------------------------------------------- the test

#[test]
fn bundled_rules_load_cleanly() {
    let (rules, report) = RuleSet::load(&rule_files());
    let mut problems = Vec::new();
    for f in &report.files {
        if let Some(e) = &f.error {
            problems.push(format!("{}: {e}", f.name));
        }
        for w in &f.warnings {
            problems.push(format!("{}: {w}", f.name));
        }
        for r in &f.rules {
            if r.status != Status::Loaded {
                problems.push(format!("{}: rule {:?} is {}: {:?}", f.name, r.name, r.status.name(), r.reason));
            }
            if r.kinds != ["process-exec"] {
                problems.push(format!("{}: rule {:?} is evaluated on {:?}, not only exec", f.name, r.name, r.kinds));
            }
        }
    }
    assert!(problems.is_empty(), "rule files do not load cleanly:\n{}", problems.join("\n"));
    assert!(rules.rules().len() >= 60, "only {} rules loaded", rules.rules().len());
    for r in rules.rules() {
        assert!(r.tags.iter().any(|t| t.starts_with('T')), "rule {:?} has no ATT&CK technique tag", r.name);
    }
}

/// Falco anchors `regex` at both ends (RE2 ANCHOR_BOTH); every bundled
/// pattern must mean the same whether or not the engine anchors it.
#[test]
fn bundled_regexes_hold_anchored_or_not() {
    let mut seen = 0;
    for file in rule_files() {
        let mut rest = file.text.as_str();
        while let Some(at) = rest.find("regex \"") {
            rest = &rest[at + 7..];
            let mut end = 0;
            let bytes = rest.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let pattern = &rest[..end];
            let ok = (pattern.starts_with("(?s).*(?:")
                || pattern.starts_with("(?si).*(?:")
                || pattern.starts_with("(?s)^(?:")
                || pattern.starts_with("(?si)^(?:"))
                && (pattern.ends_with(").*") || pattern.ends_with("$"));
            assert!(ok, "{}: regex not written to hold anchored and unanchored: {pattern}", file.name);
            seen += 1;
            rest = &rest[end..];
        }
    }
    assert!(seen > 100, "only {seen} regexes found");
}

/// Falco's parser accepts only \\ and \" (and \b \f \n \r \t \/) in a
/// "-quoted string and rejects any other escape; the bundled files use only
/// the first two, so they load in Falco as they are.
#[test]
fn bundled_strings_use_only_falco_escapes() {
    for file in rule_files() {
        let bytes = file.text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                assert!(
                    next == b'\\' || next == b'"',
                    "{}: escape \\{} at byte {i} is not one Falco accepts",
                    file.name,
                    next as char
                );
                i += 2;
            } else {
                i += 1;
            }
        }
    }
}

#[test]
fn bundled_rules_over_the_detection_corpus() {
    let (rules, _) = RuleSet::load(&rule_files());
    let names: BTreeSet<&str> = rules.rules().iter().map(|r| r.name.as_str()).collect();
    let cases = corpus();

    let attacks = cases.iter().filter(|c| !c.expect.is_empty()).count();
    let benign = cases.len() - attacks;
    assert!(attacks >= 45, "{attacks} attack cases");
    assert!(benign >= 18, "{benign} benign cases");

    let mut failures = Vec::new();
    let mut per_tactic: BTreeMap<&str, usize> = BTreeMap::new();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    for case in &cases {
        assert!(seen_names.insert(case.name.as_str()), "duplicate case name {:?}", case.name);
        assert!(!case.argv.is_empty(), "{}: empty argv", case.name);
        *per_tactic.entry(case.tactic.as_str()).or_default() += 1;
        if !case.expect.is_empty() && !names.contains(case.expect.as_str()) {
            failures.push(format!("{}: expects {:?}, which is no bundled rule", case.name, case.expect));
            continue;
        }
        let places: &[Place] = match case.place.as_str() {
            "container" => &[Place::Container],
            "host" => &[Place::Host],
            "both" => &[Place::Container, Place::Host],
            other => panic!("{}: where = {other:?}", case.name),
        };
        for &place in places {
            let evs = events(case, place);
            if case.expect.is_empty() {
                for (e, _) in &evs {
                    for (rule, message) in fired(&rules, e) {
                        failures.push(format!(
                            "benign {:?} ({place:?}): {rule:?} fired on {}\n    {message}",
                            case.name,
                            describe(e)
                        ));
                    }
                }
            } else {
                let hit = evs
                    .iter()
                    .filter(|(_, sure)| *sure)
                    .any(|(e, _)| fired(&rules, e).iter().any(|(rule, _)| *rule == case.expect));
                if hit {
                    covered.insert(case.expect.as_str());
                } else {
                    let seen: Vec<String> = evs
                        .iter()
                        .map(|(e, sure)| {
                            let rules: Vec<&str> = fired(&rules, e).into_iter().map(|(r, _)| r).collect();
                            format!("    {}{} -> {rules:?}", if *sure { "" } else { "(may not exist) " }, describe(e))
                        })
                        .collect();
                    failures.push(format!(
                        "attack {:?} ({place:?}): {:?} did not fire; events:\n{}",
                        case.name,
                        case.expect,
                        seen.join("\n")
                    ));
                }
            }
        }
    }
    eprintln!("cases per tactic: {per_tactic:?} ({attacks} attacks, {benign} benign)");
    let untested: Vec<&&str> = names.iter().filter(|n| !covered.contains(**n)).collect();
    eprintln!("rules no attack case exercises ({}): {untested:?}", untested.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn script_splitting() {
    let cmds = simple_commands("cd /tmp && wget -q http://x -O /tmp/a; chmod +x /tmp/a 2>/dev/null | sh > /tmp/f 2>&1");
    assert_eq!(
        cmds,
        vec![
            vec!["cd", "/tmp"],
            vec!["wget", "-q", "http://x", "-O", "/tmp/a"],
            vec!["chmod", "+x", "/tmp/a"],
            vec!["sh"],
        ]
    );
    let cmds = simple_commands("X=1 timeout 1 bash -c 'echo > /dev/tcp/h/1' 3</bin/true; echo $(id -u) `uname`");
    assert_eq!(cmds[0], vec!["timeout", "1", "bash", "-c", "echo > /dev/tcp/h/1"]);
    assert_eq!(cmds[1], vec!["echo"]);
    assert_eq!(cmds[2], vec!["id", "-u"]);
    assert_eq!(cmds[3], vec!["uname"]);
}

/// Prints every case's events and the rules they fire: a tool for rule authors.
#[test]
#[ignore = "prints the corpus' events and alerts: cargo test -p vigil-rulelang --test bundled -- --ignored --nocapture"]
fn dump_corpus_alerts() {
    let (rules, _) = RuleSet::load(&rule_files());
    for case in corpus() {
        let places: &[Place] = match case.place.as_str() {
            "container" => &[Place::Container],
            "host" => &[Place::Host],
            _ => &[Place::Container, Place::Host],
        };
        for &place in places {
            println!("== {} ({place:?}) expect {:?}", case.name, case.expect);
            for (e, sure) in events(&case, place) {
                let fired: Vec<(&str, String)> = fired(&rules, &e);
                println!("  {}{}", if sure { "" } else { "? " }, describe(&e));
                for (r, m) in fired {
                    println!("     -> {r}: {m}");
                }
            }
        }
    }
}

/// What busy hosts and clusters run all day, with the parents they run under:
/// none of it may alert. Synthetic (not run for real), so anything goes.
#[test]
fn routine_activity_stays_quiet() {
    let (rules, _) = RuleSet::load(&rule_files());
    // (image or "" for the host, exe, argv, parents as (exe, argv), parent first)
    type Routine<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(&'a str, &'a [&'a str])]);
    let systemd: (&str, &[&str]) = ("/usr/lib/systemd/systemd", &["/sbin/init"]);
    let shim: (&str, &[&str]) =
        ("/usr/bin/containerd-shim-runc-v2", &["containerd-shim-runc-v2", "-namespace", "k8s.io"]);
    let runc: (&str, &[&str]) = ("/usr/bin/runc", &["runc", "exec", "--process", "/tmp/runc-process1"]);
    let dpkg: (&str, &[&str]) = ("/usr/bin/dpkg", &["dpkg", "--configure", "-a"]);
    let apt: (&str, &[&str]) = ("/usr/bin/apt-get", &["apt-get", "install", "-y", "openssh-server"]);
    let cron: (&str, &[&str]) = ("/usr/sbin/cron", &["/usr/sbin/cron", "-f"]);
    let cron_sh: (&str, &[&str]) = ("/usr/bin/dash", &["/bin/sh", "-c", "cd / && run-parts --report /etc/cron.daily"]);
    let logrotate: (&str, &[&str]) = ("/usr/sbin/logrotate", &["/usr/sbin/logrotate", "/etc/logrotate.conf"]);
    let dockerd: (&str, &[&str]) = ("/usr/bin/dockerd", &["/usr/bin/dockerd", "-H", "fd://"]);
    let kube_proxy: (&str, &[&str]) =
        ("/usr/local/bin/kube-proxy", &["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"]);
    let calico: (&str, &[&str]) = ("/usr/bin/calico-node", &["calico-node", "-felix"]);
    let git: (&str, &[&str]) = ("/usr/bin/git", &["git", "fetch", "origin"]);
    let java: (&str, &[&str]) = ("/opt/java/openjdk/bin/java", &["java", "-jar", "/app/app.jar"]);
    let entry_sh: (&str, &[&str]) = ("/bin/busybox", &["sh", "/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]);
    let bash: (&str, &[&str]) = ("/usr/bin/bash", &["-bash"]);
    let sshd: (&str, &[&str]) = ("/usr/sbin/sshd", &["sshd: admin@pts/0"]);
    let kworker: (&str, &[&str]) = ("", &[]);
    let routine: &[Routine] = &[
        ("", "/usr/sbin/logrotate", &["/usr/sbin/logrotate", "/etc/logrotate.conf"], &[systemd]),
        ("", "/usr/bin/gzip", &["/bin/gzip", "/var/log/syslog.1"], &[logrotate, systemd]),
        ("", "/usr/bin/dash", &["/bin/sh", "-c", "invoke-rc.d rsyslog rotate > /dev/null"], &[logrotate, systemd]),
        ("", "/usr/bin/rm", &["rm", "-f", "/var/log/nginx/access.log.5.gz"], &[cron_sh, cron, systemd]),
        ("", "/usr/sbin/iptables", &["iptables", "--wait", "-t", "nat", "-F", "DOCKER"], &[dockerd, systemd]),
        ("", "/usr/sbin/iptables", &["iptables", "--wait", "-t", "filter", "-F"], &[dockerd, systemd]),
        (
            "",
            "/usr/sbin/iptables-restore",
            &["iptables-restore", "-w", "5", "--noflush", "--counters"],
            &[kube_proxy, systemd],
        ),
        ("", "/usr/sbin/modprobe", &["/sbin/modprobe", "-q", "--", "net-pf-10"], &[kworker]),
        (
            "",
            "/usr/bin/dash",
            &["/bin/sh", "/var/lib/dpkg/info/openssh-server.postinst", "configure"],
            &[dpkg, apt, bash],
        ),
        (
            "",
            "/usr/sbin/adduser",
            &["adduser", "--system", "--group", "--no-create-home", "sshd"],
            &[("/usr/bin/dash", &["/bin/sh", "/var/lib/dpkg/info/openssh-server.postinst", "configure"]), dpkg, apt],
        ),
        (
            "",
            "/usr/bin/chmod",
            &["chmod", "4755", "/usr/lib/openssh/ssh-keysign"],
            &[("/usr/bin/dash", &["/bin/sh", "/var/lib/dpkg/info/openssh-client.postinst"]), dpkg, apt],
        ),
        (
            "",
            "/usr/bin/systemctl",
            &["systemctl", "enable", "ssh.service"],
            &[("/usr/bin/perl", &["/usr/bin/deb-systemd-helper", "enable", "ssh.service"]), dpkg, apt],
        ),
        ("", "/usr/bin/dash", &["/bin/sh", "-c", "cd / && run-parts --report /etc/cron.hourly"], &[cron, systemd]),
        (
            "",
            "/usr/bin/ssh",
            &["ssh", "-o", "ControlMaster=auto", "git@github.com", "git-upload-pack 'org/repo.git'"],
            &[git, bash],
        ),
        ("", "/usr/bin/curl", &["curl", "-sSf", "https://sh.rustup.rs", "-o", "/tmp/rustup-init.sh"], &[bash, sshd]),
        ("", "/usr/bin/grep", &["grep", "-rn", "password", "src/"], &[bash, sshd]),
        ("", "/usr/bin/touch", &["touch", "-d", "@0", "build/stamp"], &[("/usr/bin/make", &["make", "all"]), bash]),
        (
            "",
            "/tmp/go-build2941/b001/vigil.test",
            &["/tmp/go-build2941/b001/vigil.test", "-test.v"],
            &[("/usr/local/go/bin/go", &["go", "test", "./..."]), bash],
        ),
        ("", "/usr/bin/docker", &["docker", "exec", "-it", "web", "sh"], &[bash, sshd]),
        ("", "/usr/bin/docker", &["docker", "run", "-d", "--name", "web", "-p", "80:80", "nginx:1.25"], &[bash, sshd]),
        ("", "/usr/bin/ps", &["ps", "aux"], &[bash, sshd]),
        ("", "/usr/bin/tar", &["tar", "-xzf", "/tmp/node.tgz", "-C", "/opt"], &[bash, sshd]),
        (
            "",
            "/usr/bin/find",
            &["find", "/var/log", "-name", "*.gz", "-mtime", "+7", "-delete"],
            &[cron_sh, cron, systemd],
        ),
        ("", "/usr/bin/sudo", &["sudo", "systemctl", "restart", "nginx"], &[bash, sshd]),
        (
            "",
            "/usr/sbin/sshd",
            &["/usr/sbin/sshd", "-D", "-R"],
            &[("/usr/sbin/sshd", &["sshd: /usr/sbin/sshd -D"]), systemd],
        ),
        ("", "/usr/bin/journalctl", &["journalctl", "-u", "nginx", "--since", "1 hour ago"], &[bash, sshd]),
        ("", "/usr/bin/cat", &["cat", "/root/.ssh/id_rsa.pub"], &[bash, sshd]),
        ("", "/usr/bin/ls", &["ls", "-la", "/root/.ssh"], &[bash, sshd]),
        ("nginx:1.25", "/bin/busybox", &["curl", "-f", "http://localhost:8080/healthz"], &[runc, shim]),
        (
            "nginx:1.25",
            "/usr/bin/dash",
            &["/bin/sh", "-c", "curl -fs http://localhost/api/v1/health || exit 1"],
            &[runc, shim],
        ),
        ("nginx:1.25", "/usr/bin/dash", &["/bin/sh", "/docker-entrypoint.sh", "nginx", "-g", "daemon off;"], &[shim]),
        (
            "nginx:1.25",
            "/usr/bin/find",
            &["find", "/docker-entrypoint.d/", "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-print", "-quit"],
            &[entry_sh, shim],
        ),
        ("nginx:1.25", "/usr/sbin/nginx", &["nginx", "-g", "daemon off;"], &[shim]),
        (
            "postgres:16",
            "/usr/bin/chmod",
            &["chmod", "700", "/var/lib/postgresql/data"],
            &[("/usr/bin/bash", &["bash", "/usr/local/bin/docker-entrypoint.sh", "postgres"]), shim],
        ),
        (
            "postgres:16",
            "/usr/bin/find",
            &["find", "/var/lib/postgresql/data", "!", "-user", "postgres", "-exec", "chown", "postgres", "{}", "+"],
            &[("/usr/bin/bash", &["bash", "/usr/local/bin/docker-entrypoint.sh", "postgres"]), shim],
        ),
        (
            "mysql:8",
            "/usr/bin/mysql",
            &["mysql", "--protocol=socket", "-uroot", "-hlocalhost", "--socket=/var/run/mysqld/mysqld.sock"],
            &[("/usr/bin/bash", &["bash", "/entrypoint.sh", "mysqld"]), shim],
        ),
        ("redis:7", "/usr/local/bin/redis-cli", &["redis-cli", "ping"], &[runc, shim]),
        ("app:1", "/usr/bin/dash", &["/bin/sh", "-c", "ulimit -n"], &[java, shim]),
        (
            "app:1",
            "/usr/bin/dash",
            &["/bin/sh", "-c", "convert /tmp/upload-1.png -resize 50% /tmp/thumb-1.png"],
            &[java, shim],
        ),
        (
            "jenkins/inbound-agent:latest",
            "/usr/bin/docker",
            &["docker", "build", "-t", "app", "."],
            &[("/usr/bin/dash", &["sh", "-c", "docker build -t app ."]), java, shim],
        ),
        (
            "registry.k8s.io/kube-proxy:v1.30.0",
            "/usr/sbin/iptables",
            &["iptables", "-w", "-t", "nat", "-F", "KUBE-SERVICES"],
            &[kube_proxy, shim],
        ),
        ("docker.io/calico/node:v3.27.0", "/usr/sbin/modprobe", &["modprobe", "ipip"], &[calico, shim]),
        ("registry.k8s.io/pause:3.9", "/pause", &["/pause"], &[shim]),
        (
            "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:v1.30.0",
            "/bin/mount",
            &[
                "mount",
                "-t",
                "ext4",
                "-o",
                "defaults",
                "/dev/nvme1n1",
                "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount",
            ],
            &[("/bin/aws-ebs-csi-driver", &["aws-ebs-csi-driver", "node"]), shim],
        ),
        (
            "python:3.12",
            "/usr/local/bin/python3.12",
            &["python3", "-c", "import sys; print(sys.version)"],
            &[runc, shim],
        ),
        ("python:3.12", "/usr/local/bin/python3.12", &["python3", "-m", "pip", "list"], &[runc, shim]),
        (
            "node:20",
            "/usr/local/bin/node",
            &[
                "node",
                "-e",
                "require('http').get('http://localhost:3000/health', r => process.exit(r.statusCode === 200 ? 0 : 1))",
            ],
            &[runc, shim],
        ),
        ("busybox:1.36", "/bin/busybox", &["sleep", "3600"], &[shim]),
        (
            "ubuntu:24.04",
            "/usr/bin/bash",
            &["/bin/bash", "-c", "echo 'export PATH=/opt/bin:$PATH' >> /root/.bashrc"],
            &[shim],
        ),
        (
            "ubuntu:24.04",
            "/usr/bin/dash",
            &["/bin/sh", "-c", "curl -fsSL https://deb.nodesource.com/setup_20.x | bash -"],
            &[("/usr/bin/runc", &["buildkit-runc", "run"]), ("/usr/bin/dockerd", &["dockerd"])],
        ),
    ];
    let mut failures = Vec::new();
    for (image, exe, argv, parents) in routine {
        let ancestry: Vec<Ancestor> = parents
            .iter()
            .filter(|(exe, _)| !exe.is_empty())
            .enumerate()
            .map(|(i, (exe, argv))| ancestor(4000 - i as u32 * 10, exe, argv))
            .collect();
        let comm = comm_of(argv[0]);
        let event = Event {
            id: 1,
            time_ns: 1_763_000_000_000_000_000,
            process: Some(Process {
                pid: 4242,
                tgid: 4242,
                ppid: ancestry.first().map_or(2, |a| a.pid),
                comm,
                exe: exe.to_string(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ancestry,
                ..Default::default()
            }),
            container: (!image.is_empty()).then(|| {
                Arc::new(Container {
                    id: CONTAINER_ID.into(),
                    name: "routine".into(),
                    image: image.to_string(),
                    runtime: Runtime::Containerd,
                    pid: 100,
                    ..Default::default()
                })
            }),
            ..Event::new(EventKind::ProcessExec)
        };
        for (rule, message) in fired(&rules, &event) {
            failures.push(format!("{rule:?} fired on routine {argv:?} ({image}):\n    {message}"));
        }
    }
    assert!(failures.is_empty(), "{} false positives:\n{}", failures.len(), failures.join("\n"));
}
