#!/usr/bin/env bash
# Builds RideShare's Docker images, tagged rideshare/<name>:latest, and prints their sizes.
#
#   scripts/docker-build.sh [NAME...]
#
# NAME is any of: orchestrator worker users rides rabbitmq zookeeper gateway (default: all of them).
#
# The Rust services' binaries are built here, on the host (`cargo build --release`), and copied into their
# images: no Rust toolchain is needed in any image, nor reachable from one on a machine without registry access.
# Each image gets a build context of its own under target/docker-context/<name>/ (its Dockerfile and exactly the
# files it copies), so a context holds no more than its image needs. Every image starts from
# debian:bookworm-slim, which scripts/base-image.sh creates when this machine does not have it.
#
# The binaries link glibc dynamically: the host that builds them must have a glibc no newer than bookworm's
# (2.36), as Debian 12 and Ubuntu 22.04 do. Each Rust image is checked by running its binary with --help.
#
# Environment (each optional):
#   RIDESHARE_DOCKER_STRIP   0: keep the binaries' symbol tables (about 2 MB each; backtraces name functions)
#   DOCKER_BUILD_ARGS        extra arguments for every `docker build` (e.g. --no-cache or --pull)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

ALL=(rabbitmq zookeeper orchestrator worker users rides gateway)
STRIP=${RIDESHARE_DOCKER_STRIP:-1}
read -ra build_args <<<"${DOCKER_BUILD_ARGS:-}"
target_dir=${CARGO_TARGET_DIR:-$root/target}
contexts=$target_dir/docker-context

log() {
    echo "docker-build.sh: $*" >&2
}

die() {
    echo "docker-build.sh: error: $*" >&2
    exit 1
}

# The binaries each image holds; an image with none is built from Debian packages alone.
binaries_of() {
    case $1 in
    orchestrator) echo "orchestrator worker" ;;
    worker | users | rides) echo "$1" ;;
    *) echo "" ;;
    esac
}

names=("$@")
((${#names[@]} > 0)) || names=("${ALL[@]}")
for name in "${names[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || die "unknown image $name (known: ${ALL[*]})"
done

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (is it running, and may this user use it?)"

# --- the binaries ------------------------------------------------------------------------------------------------

packages=()
for name in "${names[@]}"; do
    for bin in $(binaries_of "$name"); do
        [[ " ${packages[*]} " == *" $bin "* ]] || packages+=("$bin")
    done
done
if ((${#packages[@]} > 0)); then
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        PATH=$HOME/.cargo/bin:$PATH
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (scripts/setup.sh says how)"
    log "building release binaries: ${packages[*]}"
    # One package per binary: each crate is named after its binary.
    cargo build --release --bins "${packages[@]/#/--package=}"
fi
if [[ $STRIP == 1 ]] && ! command -v strip >/dev/null 2>&1; then
    log "strip (binutils) is not installed: the binaries keep their symbol tables"
    STRIP=0
fi

# --- the base image ----------------------------------------------------------------------------------------------

"$root/scripts/base-image.sh"

# --- build contexts and images -----------------------------------------------------------------------------------

# prepare NAME: fills $contexts/NAME with the image's Dockerfile and the files it copies.
prepare() {
    local name=$1 ctx=$contexts/$1 bin
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp -p "$root/docker/$name/"* "$ctx/"
    cp -p "$root/docker/healthcheck" "$ctx/"
    for bin in $(binaries_of "$name"); do
        if [[ $STRIP == 1 ]]; then
            strip -o "$ctx/$bin" "$target_dir/release/$bin"
        else
            cp -p "$target_dir/release/$bin" "$ctx/"
        fi
    done
    case $name in
    gateway)
        cp -p "$root/gateway/nginx.conf.template" "$root/scripts/gateway.sh" "$ctx/"
        cp -pr "$root/gateway/www" "$ctx/"
        ;;
    esac
}

build_log=$(mktemp /tmp/rideshare-docker-build.XXXXXX.log)
for name in "${names[@]}"; do
    prepare "$name"
    log "building rideshare/$name:latest"
    previous=$(docker image inspect -f '{{.Id}}' "rideshare/$name:latest" 2>/dev/null || true)
    if ! docker build "${build_args[@]}" -t "rideshare/$name:latest" "$contexts/$name" >"$build_log" 2>&1; then
        tail -n 30 "$build_log" >&2
        die "docker build of rideshare/$name failed (full log: $build_log)"
    fi
    # The image this one replaces, now untagged, unless a container still uses it or another tag names it.
    if [[ -n $previous && $previous != "$(docker image inspect -f '{{.Id}}' "rideshare/$name:latest")" &&
        -z "$(docker image inspect -f '{{join .RepoTags ""}}' "$previous" 2>/dev/null || echo tagged)" ]]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    # The binaries start in the image: no missing library, no glibc newer than the image's.
    for bin in $(binaries_of "$name"); do
        if ! out=$(docker run --rm --entrypoint "/usr/local/bin/$bin" "rideshare/$name:latest" --help 2>&1); then
            echo "$out" | tail -n 5 >&2
            die "$bin does not run in rideshare/$name (built against a newer glibc than bookworm's?)"
        fi
    done
done
rm -f "$build_log"

echo
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    awk -F '\t' -v names=" ${names[*]} " '
        { split($1, parts, /[\/:]/) }
        parts[1] == "rideshare" && index(names, " " parts[2] " ") { printf "  %-32s %s\n", $1, $2 }
        $1 == "debian:bookworm-slim" { base = $2 }
        END { printf "  %-32s %s (the base of each)\n", "debian:bookworm-slim", base }'
