#!/usr/bin/env bash
# Real container runtimes for the tests, on private sockets and directories
# (never the host's own), as root:
#   runtimes.sh install            install Docker (docker.io, with containerd
#                                  and runc), Podman and busybox-static from
#                                  Debian
#   runtimes.sh start-docker DIR   start dockerd on DIR/docker.sock and import
#                                  the test image vigil-busybox:test (no
#                                  registry: a busybox rootfs)
#   runtimes.sh stop-docker DIR    remove its containers, stop it by pid, and
#                                  remove the /docker cgroups it left
#   runtimes.sh kill-docker DIR    stop dockerd by pid, keeping its containers
#                                  (start-docker DIR brings it back)
#                                  With CGROUP_V1_ONLY=1, dockerd runs in a
#                                  private mount namespace without the unified
#                                  cgroup hierarchy, so its containers live in
#                                  cgroup v1 only (as on a legacy v1 host); it
#                                  needs v1 controllers mounted (hybrid host).
#                                  With OWN_NETNS=1, dockerd runs in a network
#                                  namespace of its own (only lo): its
#                                  networks and published ports never touch
#                                  the host's
#   runtimes.sh start-podman DIR   start `podman system service` (Docker-
#   runtimes.sh stop-podman DIR    compatible API) on DIR/podman.sock, same
#   runtimes.sh kill-podman DIR    image, same verbs
#   runtimes.sh start-containerd DIR  containerd with its CRI plugin on
#   runtimes.sh stop-containerd DIR   DIR/containerd.sock, the test image
#   runtimes.sh kill-containerd DIR   (also the pods' sandbox image) imported
#                                     into its k8s.io namespace
set -euo pipefail

# A busybox root filesystem as a tar: the test image, without a registry.
busybox_rootfs() {
    local dir=$1 rootfs="$1/rootfs"
    mkdir -p "$rootfs/bin"
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    # Every applet, as busybox images have them (the detection tests run
    # attackers' and applications' commands in it).
    for tool in $("$rootfs/bin/busybox" --list); do
        [ "$tool" = busybox ] || ln -sf busybox "$rootfs/bin/$tool"
    done
    tar -C "$rootfs" -cf "$dir/rootfs.tar" .
}

# podman on DIR's own storage, with this machine's quirks: root may not
# raise rlimits (so explicit ulimits), no systemd (cgroupfs), no journald.
podman_in() {
    local dir=$1
    shift
    CONTAINERS_CONF="$dir/containers.conf" podman --root "$dir/root" --runroot "$dir/run" --tmpdir "$dir/tmp" "$@"
}

# Stops the process whose pid is in DIR/NAME.pid, if it is still ours (its
# command line names DIR): SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    local file="$1/$2.pid" pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    rm -f "$file"
    grep -qa -- "$1" "/proc/$pid/cmdline" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

podman_remote() {
    local dir=$1
    shift
    podman --remote --url "unix://$dir/podman.sock" "$@"
}

case "${1:-}" in
install)
    if ! command -v dockerd >/dev/null || ! command -v podman >/dev/null || ! command -v busybox >/dev/null; then
        echo "runtimes: installing docker.io, podman and busybox-static"
        export DEBIAN_FRONTEND=noninteractive
        packages="docker.io podman containernetworking-plugins busybox-static"
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1 || {
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends $packages >/dev/null
        }
    fi
    ;;
start-docker)
    dir=${2:?usage: runtimes.sh start-docker DIR}
    mkdir -p "$dir"
    launch=()
    unshare_flags=() unified=""
    if [ "${CGROUP_V1_ONLY:-}" = 1 ]; then
        grep -q ' - cgroup cgroup ' /proc/self/mountinfo || {
            echo "runtimes: no cgroup v1 controller is mounted here; CGROUP_V1_ONLY needs a hybrid host" >&2
            exit 2
        }
        unified=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
        unshare_flags+=(--mount --propagation private)
    fi
    [ "${OWN_NETNS:-}" = 1 ] && unshare_flags+=(--net)
    if [ ${#unshare_flags[@]} -gt 0 ]; then
        # unshare execs sh, which execs dockerd: $! stays dockerd's pid.
        launch=(unshare "${unshare_flags[@]}" -- sh -c \
            '[ -z "$1" ] || umount -l "$1"; ip link set lo up 2>/dev/null; shift; exec "$@"' sh "$unified")
    fi
    # No iptables rules, no bridge: the host's network is left alone.
    "${launch[@]}" dockerd -H "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" --iptables=false --ip6tables=false --bridge=none \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    export DOCKER_HOST="unix://$dir/docker.sock"
    for _ in $(seq 100); do
        docker version >/dev/null 2>&1 && break
        sleep 0.1
    done
    docker version >/dev/null || { echo "runtimes: dockerd did not start:" >&2; tail -20 "$dir/dockerd.log" >&2; exit 1; }
    busybox_rootfs "$dir"
    docker import -c 'CMD ["/bin/sleep","3600"]' "$dir/rootfs.tar" vigil-busybox:test >/dev/null
    ;;
stop-docker | kill-docker)
    dir=${2:?usage: runtimes.sh stop-docker|kill-docker DIR}
    export DOCKER_HOST="unix://$dir/docker.sock"
    if [ "$1" = stop-docker ]; then
        docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    fi
    stop_pid "$dir" docker
    [ "$1" = kill-docker ] && exit 0
    # dockerd leaves its parent cgroup behind; remove it where empty.
    for cg in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    ;;
start-podman)
    dir=${2:?usage: runtimes.sh start-podman DIR}
    mkdir -p "$dir/tmp"
    printf '%s\n' '[containers]' 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]' \
        '[engine]' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
        "events_logfile_path = \"$dir/events.log\"" >"$dir/containers.conf"
    rm -f "$dir/podman.sock"
    # Not through podman_in: $! must be podman's own pid.
    CONTAINERS_CONF="$dir/containers.conf" podman --root "$dir/root" --runroot "$dir/run" --tmpdir "$dir/tmp" \
        system service --time=0 "unix://$dir/podman.sock" >>"$dir/podman.log" 2>&1 </dev/null &
    echo $! >"$dir/podman.pid"
    for _ in $(seq 100); do
        [ -S "$dir/podman.sock" ] && podman_remote "$dir" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    podman_remote "$dir" version >/dev/null || {
        echo "runtimes: podman did not start:" >&2
        tail -20 "$dir/podman.log" >&2
        exit 1
    }
    if ! podman_remote "$dir" image exists vigil-busybox:test; then
        busybox_rootfs "$dir"
        podman_remote "$dir" import --change 'CMD ["/bin/sleep","3600"]' "$dir/rootfs.tar" vigil-busybox:test >/dev/null
    fi
    ;;
stop-podman | kill-podman)
    dir=${2:?usage: runtimes.sh stop-podman|kill-podman DIR}
    if [ "$1" = stop-podman ]; then
        podman_remote "$dir" rm -af -t 0 >/dev/null 2>&1 || true
    fi
    stop_pid "$dir" podman
    [ "$1" = kill-podman ] && exit 0
    # What the service could not remove, then the storage's mounts.
    podman_in "$dir" rm -af -t 0 >/dev/null 2>&1 || true
    # conmon outlives an exec session by minutes (its --exit-delay): stop ours.
    pgrep -f "^/usr/bin/conmon .* -b $dir/" | xargs -r kill -KILL 2>/dev/null || true
    podman_in "$dir" system reset -f >/dev/null 2>&1 || true
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    # Podman leaves its parent cgroups behind; remove them where empty.
    for cg in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do
        [ -d "$cg/conmon" ] && rmdir "$cg/conmon" 2>/dev/null || true
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    ;;
start-containerd)
    dir=${2:?usage: runtimes.sh start-containerd DIR}
    mkdir -p "$dir/cni-conf"
    # This machine's root may not lower oom_score_adj (restrict it), has no
    # systemd (cgroupfs), and pods use the host network (no CNI needed).
    cat >"$dir/config.toml" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/vigil-busybox:test"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$dir/runc"
CONF
    rm -f "$dir/containerd.sock"
    containerd --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$dir/containerd.pid"
    for _ in $(seq 100); do
        [ -S "$dir/containerd.sock" ] && ctr -a "$dir/containerd.sock" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    ctr -a "$dir/containerd.sock" version >/dev/null || {
        echo "runtimes: containerd did not start:" >&2
        tail -20 "$dir/containerd.log" >&2
        exit 1
    }
    # (grep without -q: it must read all, or pipefail sees ctr's SIGPIPE.)
    if ! ctr -a "$dir/containerd.sock" -n k8s.io images ls -q | grep -x localhost/vigil-busybox:test >/dev/null; then
        # The image as a docker archive, made by podman on throwaway storage.
        busybox_rootfs "$dir"
        mkdir -p "$dir/img/tmp"
        printf '%s\n' '[engine]' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
            "events_logfile_path = \"$dir/img/events.log\"" >"$dir/img/containers.conf"
        podman_in "$dir/img" import --change 'CMD ["/bin/sleep","3600"]' "$dir/rootfs.tar" vigil-busybox:test >/dev/null 2>&1
        rm -f "$dir/busybox.tar"
        podman_in "$dir/img" save --format docker-archive -o "$dir/busybox.tar" vigil-busybox:test 2>/dev/null
        podman_in "$dir/img" system reset -f >/dev/null 2>&1 || true
        ctr -a "$dir/containerd.sock" -n k8s.io images import "$dir/busybox.tar" >/dev/null
    fi
    ;;
stop-containerd | kill-containerd)
    dir=${2:?usage: runtimes.sh stop-containerd|kill-containerd DIR}
    sock="$dir/containerd.sock"
    if [ "$1" = stop-containerd ] && [ -S "$sock" ]; then
        for task in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr -a "$sock" -n k8s.io tasks kill -s KILL "$task" >/dev/null 2>&1 || true
        done
        sleep 0.3
        for task in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr -a "$sock" -n k8s.io tasks delete -f "$task" >/dev/null 2>&1 || true
        done
        for c in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
            ctr -a "$sock" -n k8s.io containers delete "$c" >/dev/null 2>&1 || true
        done
    fi
    stop_pid "$dir" containerd
    [ "$1" = kill-containerd ] && exit 0
    # Containers left running (containerd was killed before this stop), then
    # shims of ours, then the mounts under DIR.
    for root in "$dir"/runc/*; do
        [ -d "$root" ] || continue
        for c in $(runc --root "$root" list -q 2>/dev/null); do
            runc --root "$root" kill "$c" KILL >/dev/null 2>&1 || true
            runc --root "$root" delete -f "$c" >/dev/null 2>&1 || true
        done
    done
    pgrep -f "containerd-shim-runc-v2 .*-address $sock" | xargs -r kill -KILL 2>/dev/null || true
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    # containerd never removes a pod's parent cgroup: remove ours where empty.
    for cg in /sys/fs/cgroup/*/kubepods/besteffort/pod* /sys/fs/cgroup/kubepods/besteffort/pod*; do
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [ -d "$cg/besteffort" ] && rmdir "$cg/besteffort" 2>/dev/null || true
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    ;;
*)
    echo "usage: runtimes.sh install | {start,stop,kill}-{docker,podman,containerd} DIR" >&2
    exit 2
    ;;
esac
