#!/usr/bin/env bash
# Starts the rides service alone, in the foreground. It keeps its data in the database behind the orchestrator
# (default http://127.0.0.1:8083; orchestrator/run.sh starts it) and waits for it at start; it checks users
# through the gateway (default http://127.0.0.1:8080; scripts/gateway.sh starts it). Arguments are passed to the
# service (see --help); each flag also has an environment variable, such as RIDESHARE_RIDES_LISTEN (default
# 127.0.0.1:8082), RIDESHARE_RIDES_DATA_DIR (default data/rides, where count.json lives) and RIDESHARE_AREAS_CSV
# (a file to take the area list from; by default the list compiled into the binary).
set -euo pipefail

cd "$(dirname "$0")/.."

export RUST_LOG=${RUST_LOG:-info}
cargo build --release --quiet -p rides
exec target/release/rides "$@"
