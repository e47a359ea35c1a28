#!/usr/bin/env bash
# Builds Vigil's OCI image on this machine, with no registry and no base
# image: the root file system is assembled from the release binary
# (stripped), the libraries it links (as ldd lists them), Debian's CA
# certificates, the bundled rules and the default config, then imported
# with podman (Debian's package, on throwaway storage) and saved as a
# docker archive, which `podman load`, `docker load` and `ctr images import`
# all read.
#
#   scripts/image.sh [TAG]     TAG defaults to the workspace's version
#
# Output: target/image/vigil-TAG.tar (image localhost/vigil:TAG) and its
# size. Builds the binary and the rules first if needed (cargo and
# scripts/build-rules.sh do nothing when they are up to date); run
# scripts/setup.sh once before, as for any build.
#
# The image:
#   /usr/local/bin/vigil        the daemon (entrypoint)
#   /usr/share/vigil/rules      the bundled rules (rules.dir)
#   /etc/vigil/rules            empty: the overlay (rules.overlay_dirs) a
#                               ConfigMap or volume mounts over
#   /etc/vigil/vigil.toml       engine/deploy/vigil.toml
#   /var/lib/vigil, /var/cache/vigil   spool and compile cache (volumes)
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${1:-$version}
out="$target_dir/image"
archive="$out/vigil-$tag.tar"

command -v podman >/dev/null || ./scripts/runtimes.sh install
# The same build as scripts/test.sh makes (not -p: no second build).
cargo build --release --workspace
./scripts/build-rules.sh >/dev/null

work=$(mktemp -d)
trap 'podman_store system reset -f >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# podman on the work dir's own storage (never the host's), this machine's
# quirks: no systemd (cgroupfs), no journald.
podman_store() {
    CONTAINERS_CONF="$work/containers.conf" podman --root "$work/root" --runroot "$work/run" --tmpdir "$work/tmp" "$@"
}
mkdir -p "$work/tmp"
printf '%s\n' '[engine]' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
    "events_logfile_path = \"$work/events.log\"" >"$work/containers.conf"

rootfs="$work/rootfs"
install -d -m 0755 "$rootfs"/{usr/local/bin,usr/share/vigil/rules,etc/vigil/rules,etc/ssl/certs,var/lib,var/cache}
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/var/lib/vigil" "$rootfs/var/cache/vigil"
install -m 0755 "$target_dir/release/vigil" "$rootfs/usr/local/bin/vigil"
strip "$rootfs/usr/local/bin/vigil"
# The libraries the binary links, and the loader, at the paths it expects.
for lib in $(ldd "$target_dir/release/vigil" | grep -o '/[^ ]*'); do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
install -m 0644 "$target_dir"/rules/*.wasm "$target_dir"/rules/*.yaml "$rootfs/usr/share/vigil/rules/"
install -m 0644 engine/deploy/vigil.toml "$rootfs/etc/vigil/vigil.toml"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/rootfs.tar" .

podman_store import --quiet \
    --change 'ENTRYPOINT ["/usr/local/bin/vigil"]' \
    --change 'CMD ["run", "--config", "/etc/vigil/vigil.toml"]' \
    --change 'EXPOSE 9376' \
    --change 'ENV RUST_LOG=info' \
    --change "LABEL org.opencontainers.image.title=vigil org.opencontainers.image.version=$version" \
    "$work/rootfs.tar" "localhost/vigil:$tag" >/dev/null
mkdir -p "$out"
rm -f "$archive"
podman_store save --format docker-archive -o "$archive" "localhost/vigil:$tag" 2>/dev/null
size=$(podman_store image inspect --format '{{.Size}}' "localhost/vigil:$tag")
gz=$(gzip -c "$archive" | wc -c)
echo "image: localhost/vigil:$tag in $archive"
echo "image size: $size bytes ($((size / 1024 / 1024)) MiB) unpacked; archive gzipped $gz bytes ($((gz / 1024 / 1024)) MiB)"
echo "  binary $(stat -c %s "$rootfs/usr/local/bin/vigil"), libraries $(du -cb "$rootfs"/lib* "$rootfs"/usr/lib* 2>/dev/null | tail -1 | cut -f1), rules $(du -sb "$rootfs/usr/share/vigil/rules" | cut -f1) bytes"
