#!/usr/bin/env bash
# Real container runtimes for the tests, on private sockets and directories
# (never the host's own), as root:
#   runtimes.sh install            install Docker (docker.io, with containerd
#                                  and runc) and busybox-static from Debian
#   runtimes.sh start-docker DIR   start dockerd on DIR/docker.sock and import
#                                  the test image vigil-busybox:test (no
#                                  registry: a busybox rootfs)
#   runtimes.sh stop-docker DIR    remove its containers, stop it by pid, and
#                                  remove the /docker cgroups it left
#   runtimes.sh kill-docker DIR    stop dockerd by pid, keeping its containers
#                                  (start-docker DIR brings it back)
set -euo pipefail

case "${1:-}" in
install)
    if ! command -v dockerd >/dev/null || ! command -v busybox >/dev/null; then
        echo "runtimes: installing docker.io and busybox-static"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null 2>&1 || {
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null
        }
    fi
    ;;
start-docker)
    dir=${2:?usage: runtimes.sh start-docker DIR}
    mkdir -p "$dir"
    # No iptables rules, no bridge: the host's network is left alone.
    dockerd -H "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" --iptables=false --ip6tables=false --bridge=none \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    export DOCKER_HOST="unix://$dir/docker.sock"
    for _ in $(seq 100); do
        docker version >/dev/null 2>&1 && break
        sleep 0.1
    done
    docker version >/dev/null || { echo "runtimes: dockerd did not start:" >&2; tail -20 "$dir/dockerd.log" >&2; exit 1; }
    rootfs="$dir/rootfs"
    mkdir -p "$rootfs/bin"
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    for tool in sh sleep true cat ls id; do ln -sf busybox "$rootfs/bin/$tool"; done
    tar -C "$rootfs" -cf "$dir/rootfs.tar" .
    docker import -c 'CMD ["/bin/sleep","3600"]' "$dir/rootfs.tar" vigil-busybox:test >/dev/null
    ;;
stop-docker | kill-docker)
    dir=${2:?usage: runtimes.sh stop-docker|kill-docker DIR}
    export DOCKER_HOST="unix://$dir/docker.sock"
    if [ "$1" = stop-docker ]; then
        docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/docker.pid" ]; then
        pid=$(cat "$dir/docker.pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    [ "$1" = kill-docker ] && exit 0
    # dockerd leaves its parent cgroup behind; remove it where empty.
    for cg in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
        [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
    done
    ;;
*)
    echo "usage: runtimes.sh install | start-docker DIR | stop-docker DIR | kill-docker DIR" >&2
    exit 2
    ;;
esac
