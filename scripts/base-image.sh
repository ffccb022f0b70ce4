#!/usr/bin/env bash
# Makes sure the base image of every RideShare image, debian:bookworm-slim, exists in the local Docker engine.
#
# On a machine that can pull images it pulls it. On one that cannot (no registry access, only a Debian mirror),
# this script creates it: `debootstrap --variant=minbase bookworm`, trimmed
# the way the official slim image is (no manual pages, documentation or translations; no apt caches), then
# `docker import`. The root filesystem is kept as a tarball, so that the image comes back in seconds, offline,
# after a `docker image prune -a` or on an engine reset.
#
# Idempotent and silent when the image is already there. Needs root (debootstrap) when it has to build.
#
# Environment (each optional):
#   RIDESHARE_BASE_IMAGE    the image to ensure (default debian:bookworm-slim)
#   RIDESHARE_BASE_CACHE    where the root filesystem tarball is kept (default /var/cache/rideshare)
#   RIDESHARE_DEBIAN_MIRROR the Debian mirror debootstrap uses, and the one the image's apt sources name
#                           (default http://deb.debian.org/debian; security updates come from
#                           http://deb.debian.org/debian-security, or RIDESHARE_DEBIAN_SECURITY_MIRROR)
#   RIDESHARE_BASE_PULL     0: do not try `docker pull` first (default 1: pull, and build only if that fails;
#                           where no registry is reachable the pull fails at once, and it is cut off after 2
#                           minutes if it hangs)
set -euo pipefail

IMAGE=${RIDESHARE_BASE_IMAGE:-debian:bookworm-slim}
CACHE_DIR=${RIDESHARE_BASE_CACHE:-/var/cache/rideshare}
MIRROR=${RIDESHARE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${RIDESHARE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TRY_PULL=${RIDESHARE_BASE_PULL:-1}
SUITE=bookworm
TARBALL=$CACHE_DIR/$SUITE-minbase-$(dpkg --print-architecture 2>/dev/null || uname -m).tar.gz

log() {
    echo "base-image.sh: $*" >&2
}

die() {
    echo "base-image.sh: error: $*" >&2
    exit 1
}

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (is it running, and may this user use it?)"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

if [[ $TRY_PULL == 1 ]] && timeout 120 docker pull -q "$IMAGE" >/dev/null 2>&1; then
    log "pulled $IMAGE"
    exit 0
fi

[[ $EUID -eq 0 ]] || die "$IMAGE is missing and creating it needs root (debootstrap): run this script as root"

mkdir -p "$CACHE_DIR"
# One builder at a time: a second run waits, then finds the tarball (or the image) the first one made.
exec 9>"$CACHE_DIR/.lock"
flock 9
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

# import: the image's default command is bash, as in the official image.
import() {
    log "importing $TARBALL as $IMAGE"
    docker import --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE (scripts/base-image.sh)" \
        "$TARBALL" "$IMAGE" >/dev/null || die "docker import of $TARBALL failed"
}

if [[ -s $TARBALL ]]; then
    import
    exit 0
fi

command -v debootstrap >/dev/null 2>&1 ||
    die "$IMAGE is missing and debootstrap is not installed: apt-get install debootstrap"

root=$(mktemp -d /var/tmp/rideshare-rootfs.XXXXXX)
log_file=$(mktemp /tmp/rideshare-debootstrap.XXXXXX.log)
cleanup() {
    # debootstrap unmounts /proc and /sys itself, even on failure; make sure before deleting the tree.
    umount -R "$root/proc" "$root/sys" 2>/dev/null || true
    rm -rf --one-file-system "$root"
    rm -f "$TARBALL.tmp"
}
trap cleanup EXIT

log "building $IMAGE with debootstrap from $MIRROR (a few minutes; log: $log_file)"
# The same trimming as the official slim image, set before the first package is unpacked.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Written by scripts/base-image.sh, as in the official slim images: no manual pages, documentation or
# translations (copyright files stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
if ! debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$log_file" 2>&1; then
    tail -n 20 "$log_file" >&2
    die "debootstrap failed (full log: $log_file)"
fi

# apt as in the official image: every bookworm suite (deb822 sources), no package cache kept, no
# recommended packages unless asked for.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// Written by scripts/base-image.sh: no .deb files kept after installing.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$root/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF

# The point releases and security fixes published since bookworm's last point release.
log "applying updates from $SUITE-updates and $SUITE-security"
if ! chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get -q update && apt-get -q -y upgrade' >>"$log_file" 2>&1; then
    tail -n 20 "$log_file" >&2
    die "updating the new root filesystem failed (full log: $log_file)"
fi

# What a container does not need, and what must not be baked into an image.
# debootstrap's first stage unpacks the essential packages without dpkg, so without the excludes above: those
# files go now.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* "$root"/usr/share/lintian/*
find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
: >"$root/etc/machine-id"
# debootstrap copies the host's resolv.conf; the container engine provides its own.
rm -f "$root/etc/resolv.conf"

tar -C "$root" --numeric-owner -czf "$TARBALL.tmp" . || die "writing $TARBALL failed"
mv "$TARBALL.tmp" "$TARBALL"
rm -f "$log_file"
import
log "$IMAGE created ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=si)B)"
