//! The storm: a tiny static program exec'd as fast as workers can, in two shapes.

use super::*;

/// Where a storm's execs come from.
#[derive(Clone, Copy)]
pub(crate) enum Shape<'a> {
    /// Threads of this process running `Command` (posix_spawn: a vfork).
    Spawn,
    /// Processes of this C program, each looping fork() + execve().
    Fork(&'a Path),
}

impl Shape<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Shape::Spawn => "spawn",
            Shape::Fork(_) => "fork",
        }
    }
}

/// `storm-fork WORKERS PER NOOP TAG`: WORKERS processes, each doing PER
/// fork() + execve(NOOP, "storm-TAG-w-i") + waitpid().
pub(crate) fn build_fork_storm(dir: &Path) -> PathBuf {
    let src = dir.join("storm-fork.c");
    let out = dir.join("vigil-storm-fork");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int workers = atoi(argv[1]), per = atoi(argv[2]);
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            char marker[128];
            for (int i = 0; i < per; i++) {
                snprintf(marker, sizeof marker, "storm-%s-%d-%d", argv[4], w, i);
                pid_t pid = fork();
                if (pid == 0) { execl(argv[3], argv[3], marker, (char *)0); _exit(127); }
                if (pid < 0 || waitpid(pid, 0, 0) < 0) _exit(1);
            }
            _exit(0);
        }
    }
    int status, failed = 0;
    while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    return failed;
}
"#,
    )
    .unwrap();
    let status = Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).status();
    assert!(status.is_ok_and(|s| s.success()), "gcc could not build the fork storm");
    out
}

/// A static program that exits at once: the cheapest exec there is.
pub(crate) fn build_noop(dir: &Path) -> PathBuf {
    let src = dir.join("noop.c");
    let out = dir.join("vigil-storm-noop");
    std::fs::write(&src, "void _start(void) { __asm__ volatile(\"mov $60, %eax\\n xor %edi, %edi\\n syscall\"); }\n")
        .unwrap();
    let status = Command::new("gcc").args(["-nostdlib", "-static", "-O2", "-o"]).arg(&out).arg(&src).status();
    assert!(status.is_ok_and(|s| s.success()), "gcc could not build the storm program");
    out
}

pub(crate) struct Storm {
    pub(crate) execs: usize,
    pub(crate) elapsed: Duration,
}

impl Storm {
    pub(crate) fn rate(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` execs of `noop` by [`WORKERS`] threads, each with a unique
/// marker argument; paced to `rate` execs/s overall when given.
pub(crate) fn storm(noop: &Path, shape: Shape, tag: &str, total: usize, rate: Option<f64>) -> Storm {
    let started = Instant::now();
    let per = total / WORKERS;
    if let Shape::Fork(program) = shape {
        assert!(rate.is_none(), "the fork storm is not paced");
        let status = Command::new(program)
            .args([WORKERS.to_string(), per.to_string()])
            .arg(noop)
            .arg(tag)
            .status()
            .expect("run the fork storm");
        assert!(status.success(), "the fork storm failed: {status}");
        return Storm { execs: per * WORKERS, elapsed: started.elapsed() };
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let noop = noop.to_path_buf();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                for i in 0..per {
                    if let Some(rate) = rate {
                        let due = t0 + Duration::from_secs_f64(i as f64 * WORKERS as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    Command::new(&noop).arg(format!("storm-{tag}-{w}-{i}")).status().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    Storm { execs: per * WORKERS, elapsed: started.elapsed() }
}
