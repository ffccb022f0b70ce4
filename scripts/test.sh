#!/usr/bin/env bash
# The test command: makes sure the tools and RabbitMQ/ZooKeeper are there (quick when they already are), then runs
# every test of the workspace, a short run of the fault suite, then the container test when Docker is there. Extra
# arguments go to the test runner (e.g. a test name filter).
# Exits non-zero when any test fails.
#
# Environment: RIDESHARE_TEST_THREADS, how many tests run at once (default: the number of CPUs). Tests start
# whole clusters (an orchestrator and worker processes) and wait on timeouts, so more tests than cores at once
# would make their timing, not the code, the thing under test.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi

scripts/setup.sh
scripts/services.sh start

threads=${RIDESHARE_TEST_THREADS:-$(nproc)}

# Tests start the worker binary (target/debug/worker) as a process, so every binary is built first: cargo builds
# a package's binaries for its own integration tests only.
cargo build --workspace --bins

# Everything but the disruptive tests, side by side; then those alone, one at a time: they restart the RabbitMQ and
# ZooKeeper that every other test uses. Both phases run even when the first fails, and either failing fails this.
status=0
cargo nextest run --workspace --no-fail-fast --no-tests=pass --test-threads "$threads" -E 'not test(/^disruptive::/)' "$@" || status=$?
cargo nextest run -p e2e --no-fail-fast --no-tests=pass --test-threads 1 -E 'test(/^disruptive::/)' "$@" || status=$?
# nextest does not run doc tests.
cargo test --workspace --doc || status=$?
# The fault suite, a short run: the system across hosts of its own (network namespaces; needs root) under a
# seeded nemesis, its history checked for linearizability and lost writes, and the cluster answering again after
# the last heal. The report is left in target/faultsuite/. Longer runs: target/debug/faultsuite --help. Not when
# the command was given a test filter.
if (($# == 0)); then
    target/debug/faultsuite --seconds "${RIDESHARE_FAULTSUITE_SECONDS:-90}" \
        --seed "${RIDESHARE_FAULTSUITE_SEED:-1}" --out target/faultsuite || status=$?
fi
# The whole system as containers under Compose, and the workers as Swarm services on a one-node swarm (made and
# left by the test when the engine is in none), with the images built from this tree (scripts/docker-build.sh
# also creates the base image where none can be pulled). Only where a Docker engine answers; said when skipped.
if docker info >/dev/null 2>&1; then
    if scripts/docker-build.sh; then
        # One at a time: the Compose project and the swarm each start a whole cluster on this machine.
        cargo nextest run -p e2e --test containers --no-fail-fast --test-threads 1 --run-ignored only "$@" ||
            status=$?
    else
        status=1
    fi
else
    echo "test.sh: no Docker engine answers: the container test (e2e/tests/containers) did not run" >&2
fi
exit "$status"
