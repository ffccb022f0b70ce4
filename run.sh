#!/usr/bin/env bash
# Starts RideShare on this machine and stays in the foreground: installs what is missing (scripts/setup.sh),
# starts RabbitMQ and ZooKeeper unless they already run (scripts/services.sh), builds the release binaries, then
# runs the orchestrator (which starts its own workers), the users and rides services, and the nginx gateway. Ctrl-C or SIGTERM stops everything this script started;
# RabbitMQ and ZooKeeper are stopped only if this script was the one that started them.
#
# Environment (each optional):
#   RIDESHARE_GATEWAY_LISTEN        gateway address, the public API (default 127.0.0.1:8080)
#   RIDESHARE_USERS_LISTEN          users service address (default 127.0.0.1:8081)
#   RIDESHARE_RIDES_LISTEN          rides service address (default 127.0.0.1:8082)
#   RIDESHARE_ORCHESTRATOR_LISTEN   orchestrator address (default 127.0.0.1:8083)
#   RIDESHARE_SCALE_INTERVAL_SECS   the orchestrator's scaling interval (its default: 120), passed through
#   RIDESHARE_RUN_DATA_DIR          where the services keep their data (default data, under the repository)
#   CARGO_TARGET_DIR                where cargo builds the binaries run (default target)
#   RUST_LOG                        log filter of every Rust process (default info)

# shellcheck disable=SC2317 # cleanup and its helpers run from the EXIT trap, which shellcheck cannot follow
set -euo pipefail

cd "$(dirname "$0")"

GATEWAY_LISTEN=${RIDESHARE_GATEWAY_LISTEN:-127.0.0.1:8080}
USERS_LISTEN=${RIDESHARE_USERS_LISTEN:-127.0.0.1:8081}
RIDES_LISTEN=${RIDESHARE_RIDES_LISTEN:-127.0.0.1:8082}
ORCHESTRATOR_LISTEN=${RIDESHARE_ORCHESTRATOR_LISTEN:-127.0.0.1:8083}
# Another directory lets a second system run beside this checkout's own (bench/compare.sh does).
DATA_DIR=${RIDESHARE_RUN_DATA_DIR:-data}
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
# The packages whose binaries are built (in release) and run.
PACKAGES=(orchestrator worker users rides)
# How long a service may take to answer GET /health, and to exit after SIGTERM.
START_TIMEOUT_SECS=60
STOP_TIMEOUT_SECS=10

export RUST_LOG=${RUST_LOG:-info}
if [[ -n ${RIDESHARE_SCALE_INTERVAL_SECS:-} ]]; then
    export RIDESHARE_SCALE_INTERVAL_SECS
fi
export RIDESHARE_ORCHESTRATOR_DATA_DIR=${RIDESHARE_ORCHESTRATOR_DATA_DIR:-$DATA_DIR/orchestrator}

log() {
    echo "run.sh: $*" >&2
}

# --- what this script started, so that it stops exactly that --------------------------------------------------

SERVICE_NAMES=() # started by start_service, in order
SERVICE_PIDS=()  # each one's pid, which is also its process group id (setsid)
STARTED_INFRA=() # rabbitmq and/or zookeeper, if this script started them
WORKER_PIDS=()   # the orchestrator's workers, listed just before it is stopped
SUMMARY=()       # "name  address" lines printed once everything is up
STOPPING=false

# start_service NAME URL COMMAND [ARGS...]: runs the command in the background in a new session, waits until
# URL/health answers, and adds the service to the summary. The new session makes its process group (it and what it
# starts, such as the orchestrator's workers) one unit to stop, and keeps a terminal's Ctrl-C away from it: the
# signal reaches this script alone, which then stops the services in reverse order.
start_service() {
    local name=$1 url=$2
    shift 2
    setsid "$@" </dev/null &
    SERVICE_NAMES+=("$name")
    SERVICE_PIDS+=("$!")
    wait_healthy "$name" "$url/health"
    SUMMARY+=("$(printf '  %-13s %s' "$name" "$url")")
}

# wait_healthy NAME URL: polls URL until it answers 2xx, while the service still runs, with a deadline.
wait_healthy() {
    local name=$1 url=$2 pid=${SERVICE_PIDS[-1]}
    local deadline=$((SECONDS + START_TIMEOUT_SECS))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "$name did not answer $url within ${START_TIMEOUT_SECS}s"
            exit 1
        fi
        sleep 0.2
    done
}

# stop_group PID: SIGTERM to the process group, then SIGKILL if it has not exited in time.
stop_group() {
    local pgid=$1
    local deadline=$((SECONDS + STOP_TIMEOUT_SECS))
    kill -TERM -- "-$pgid" 2>/dev/null || return 0
    while kill -0 -- "-$pgid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "process group $pgid did not exit within ${STOP_TIMEOUT_SECS}s of SIGTERM; killing it"
            kill -KILL -- "-$pgid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$pgid" 2>/dev/null || true
}

# Workers normally run in the orchestrator's process group and are stopped with it; these pids are a safety net
# for any that left it. Only processes still running the worker binary are killed (a pid may have been reused).
remember_workers() {
    local list
    list=$(curl -fsS --max-time 2 "http://$ORCHESTRATOR_LISTEN/api/v1/worker/list" 2>/dev/null) || return 0
    read -ra WORKER_PIDS <<<"$(tr -c '0-9' ' ' <<<"$list")"
}

kill_leftover_workers() {
    local pid exe
    for pid in "${WORKER_PIDS[@]}"; do
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        exe=${exe% (deleted)} # the binary was rebuilt while the worker ran
        if [[ ${exe##*/} == worker ]]; then
            log "killing leftover worker $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local i
    if $STOPPING; then
        return
    fi
    STOPPING=true
    trap '' INT TERM
    for ((i = ${#SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
        log "stopping ${SERVICE_NAMES[i]}"
        if [[ ${SERVICE_NAMES[i]} == orchestrator ]]; then
            remember_workers
        fi
        stop_group "${SERVICE_PIDS[i]}"
    done
    kill_leftover_workers
    if ((${#STARTED_INFRA[@]} > 0)); then
        scripts/services.sh stop "${STARTED_INFRA[@]}" || true
    fi
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- infrastructure and build ----------------------------------------------------------------------------------

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
scripts/setup.sh

for infra in rabbitmq zookeeper; do
    if ! scripts/services.sh status "$infra" >/dev/null; then
        STARTED_INFRA+=("$infra")
    fi
done
scripts/services.sh start

log "building release binaries: ${PACKAGES[*]}"
cargo build --release --bins "${PACKAGES[@]/#/--package=}"

# --- services: one start_service line each, in dependency order ----------------------------------------------

# The orchestrator stops its workers when it stops: run.sh owns the whole cluster.
start_service orchestrator "http://$ORCHESTRATOR_LISTEN" \
    "$BIN_DIR"/orchestrator --listen "$ORCHESTRATOR_LISTEN" --stop-workers-on-shutdown
# Each service creates the shared schema through the orchestrator before it reports healthy.
start_service users "http://$USERS_LISTEN" \
    "$BIN_DIR"/users --listen "$USERS_LISTEN" --orchestrator-url "http://$ORCHESTRATOR_LISTEN" \
    --data-dir "$DATA_DIR/users"
# Rides checks users through the gateway, which starts last: its first check waits for it, the start does not.
start_service rides "http://$RIDES_LISTEN" \
    "$BIN_DIR"/rides --listen "$RIDES_LISTEN" --orchestrator-url "http://$ORCHESTRATOR_LISTEN" \
    --gateway-url "http://$GATEWAY_LISTEN" --data-dir "$DATA_DIR/rides"
# The gateway's /health is the rides service's, through nginx: both are up.
start_service gateway "http://$GATEWAY_LISTEN" \
    scripts/gateway.sh --listen "$GATEWAY_LISTEN" --users "$USERS_LISTEN" --rides "$RIDES_LISTEN" \
    --runtime-dir "$DATA_DIR/gateway"

echo >&2
echo "RideShare is running; Ctrl-C stops it." >&2
printf '%s\n' "${SUMMARY[@]}" >&2
printf '  %-13s %s\n' rabbitmq amqp://127.0.0.1:5672 zookeeper 127.0.0.1:2181 >&2
printf '  %-13s %s\n' "rider page" "http://$GATEWAY_LISTEN/ (open it in a browser)" >&2
if [[ -n ${RIDESHARE_SCALE_INTERVAL_SECS:-} ]]; then
    echo "  scaling interval: ${RIDESHARE_SCALE_INTERVAL_SECS}s" >&2
fi
echo >&2

# Until a signal arrives (the traps exit, and the EXIT trap stops everything) or a service exits on its own.
status=0
wait -n -p exited "${SERVICE_PIDS[@]}" || status=$?
for i in "${!SERVICE_PIDS[@]}"; do
    if [[ ${SERVICE_PIDS[i]} == "${exited:-}" ]]; then
        log "${SERVICE_NAMES[i]} exited with status $status; stopping everything"
    fi
done
exit "$status"
