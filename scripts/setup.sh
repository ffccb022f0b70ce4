#!/usr/bin/env bash
# Installs what RideShare needs from Debian 12's packages (and, below, cargo-nextest from crates.io and
# schemathesis from PyPI), and checks that a Rust toolchain is there.
#
# Idempotent and silent when everything is already installed: `apt-get update` runs only when a package is
# missing. Needs root, or sudo when run as another user.
set -euo pipefail

# What each package is for:
#   rabbitmq-server        the broker between the orchestrator and the workers
#   zookeeper              coordination; started with /usr/share/zookeeper/bin/zkServer.sh (zookeeperd not needed)
#   libclang-dev           bindgen, run by rusqlite's `session` feature at build time
#   build-essential        the C compiler and headers for the bundled SQLite
#   pkg-config             build scripts that look for system libraries
#   nginx                  the gateway
#   wrk                    HTTP load generation for ad-hoc benchmarks
#   curl, ca-certificates  health checks, and fetching rustup when Rust is missing
#   debootstrap            the base image of the Docker images, on a machine that cannot pull it
#   iproute2, iptables     the fault suite's hosts: network namespaces, a bridge, cuts between hosts, netem
#   libfaketime            the fault suite's per-host wall clocks (offsets and steps; monotonic clocks untouched)
#   socat                  the fault suite's own test of its hosts (a listener on one host)
#   chromium, chromium-driver   the operator console's browser test (e2e/tests/browser): headless Chromium driven
#                          over WebDriver
#   python3-venv           the virtualenv that holds schemathesis (the contract fuzzing test), installed below
#   docker.io, docker-compose   when Docker is missing: the engine and Compose for the container images and test
PACKAGES=(
    rabbitmq-server
    zookeeper
    libclang-dev
    build-essential
    pkg-config
    nginx
    wrk
    curl
    ca-certificates
    debootstrap
    iproute2
    iptables
    libfaketime
    socat
    chromium
    chromium-driver
    python3-venv
)
# The containers (scripts/docker-build.sh, the Compose test): Debian's Docker engine and docker-compose 1.29, but
# only on a machine with no Docker at all (one with Docker's own packages keeps them; the two conflict).
# debootstrap, above, creates the base image where no image can be pulled.
if ! command -v docker >/dev/null 2>&1; then
    PACKAGES+=(docker.io)
fi
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    PACKAGES+=(docker-compose)
fi

die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "must run as root, or as a user who can use sudo, to run: $*"
    fi
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this script installs Debian packages with apt-get; on another system install: ${PACKAGES[*]}"
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != installed ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    echo "setup.sh: installing ${missing[*]}" >&2
    log=$(mktemp /tmp/rideshare-setup.XXXXXX.log)
    # Wait for another apt/dpkg run (unattended-upgrades on a fresh machine) instead of failing on its lock.
    apt_opts=(-q -y -o DPkg::Lock::Timeout=300)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get update failed (full log: $log)"
    fi
    # No recommends: zookeeper alone would otherwise pull in a desktop's worth of packages.
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends \
        "${missing[@]}" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get install ${missing[*]} failed (full log: $log)"
    fi
    rm -f "$log"
fi

# Rust comes from rustup, not from Debian (Debian 12's rustc is too old for the dependencies).
if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        echo "setup.sh: cargo is installed in $HOME/.cargo/bin but that is not on PATH; run: . \"\$HOME/.cargo/env\"" >&2
    else
        cat >&2 <<'EOF'
setup.sh: error: cargo was not found. Install the Rust toolchain with rustup (https://rustup.rs):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    . "$HOME/.cargo/env"
EOF
        exit 1
    fi
fi

# The test runner: scripts/test.sh runs the disruptive tests (broker and coordinator restarts) in a phase of their
# own, which needs nextest's filters. Built from crates.io when missing (a few minutes, once).
cargo_bin=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
if ! "$cargo_bin" nextest --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-nextest from crates.io" >&2
    "$cargo_bin" install --locked --quiet cargo-nextest || die "installing cargo-nextest failed"
fi

# Schemathesis (PyPI), the contract fuzzer of e2e/tests/contract: in a virtualenv of its own, made with Debian's
# python3, so neither the system's Python packages nor a user's Python are touched. Pinned, so every machine
# fuzzes with the same checks; installed again only when the pinned version is not the one there.
SCHEMATHESIS_VERSION=4.32.5
VENV_DIR=${RIDESHARE_STATE_DIR:-/var/lib/rideshare}/venv
if [[ "$("$VENV_DIR/bin/schemathesis" --version 2>/dev/null || true)" != *" $SCHEMATHESIS_VERSION"* ]]; then
    echo "setup.sh: installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $VENV_DIR" >&2
    log=$(mktemp /tmp/rideshare-setup.XXXXXX.log)
    if ! { as_root /usr/bin/python3 -m venv "$VENV_DIR" &&
        as_root "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "installing schemathesis failed (full log: $log)"
    fi
    rm -f "$log"
fi
