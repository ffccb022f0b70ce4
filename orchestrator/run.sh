#!/usr/bin/env bash
# Starts the orchestrator alone, in the foreground. It adopts the workers already running in its namespace,
# restarts stopped ones on their copies (the registry of copies is in ZooKeeper; the most up-to-date copy, as its
# worker reports it, becomes master), or else launches new ones (one master, one slave); then it keeps them alive. Assumes RabbitMQ (5672) and ZooKeeper
# (2181) are running: scripts/setup.sh installs and starts them. Arguments are passed to the orchestrator (see
# --help); each flag also has an environment variable, such as RIDESHARE_ORCHESTRATOR_LISTEN (default
# 127.0.0.1:8083).
#
# Workers outlive the orchestrator unless it is given --stop-workers-on-shutdown; they stay in this process
# group, so Ctrl-C in a terminal stops them too.
set -euo pipefail

cd "$(dirname "$0")/.."

export RUST_LOG=${RUST_LOG:-info}
cargo build --release --quiet -p orchestrator -p worker
# The orchestrator finds the worker binary next to its own executable (target/release/worker).
exec target/release/orchestrator "$@"
