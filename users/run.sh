#!/usr/bin/env bash
# Starts the users service alone, in the foreground. It keeps its data in the database behind the orchestrator
# (default http://127.0.0.1:8083; orchestrator/run.sh starts it) and waits for it at start. Arguments are passed
# to the service (see --help); each flag also has an environment variable, such as RIDESHARE_USERS_LISTEN
# (default 127.0.0.1:8081) and RIDESHARE_USERS_DATA_DIR (default data/users, where count.json lives).
set -euo pipefail

cd "$(dirname "$0")/.."

export RUST_LOG=${RUST_LOG:-info}
cargo build --release --quiet -p users
exec target/release/users "$@"
