#!/usr/bin/env bash
# Load benchmark of the public API through the gateway, with wrk: registering users, creating rides, listing
# upcoming rides (100 stored between the two areas), and reading a ride's details, at 1, 16 and 64 clients.
# Prints throughput, p50 and p99 latency and errors for each, then the resident memory of every process of the
# system. Figures only: nothing is asserted.
#
#   bench/public_api.sh [--start]
#
# Without --start, the system must already run (./run.sh) at the addresses below. With --start, this script
# builds the release binaries, makes sure RabbitMQ and ZooKeeper are up, then starts ./run.sh itself, reports
# how long it took from starting ./run.sh to the first successful registration, and stops it at the end.
#
# Environment (each optional):
#   RIDESHARE_GATEWAY_URL       default http://127.0.0.1:8080
#   RIDESHARE_ORCHESTRATOR_URL  default http://127.0.0.1:8083 (to find the workers' pids; none there: one process)
#   BENCH_SECONDS               duration of each run (default 10)
#   BENCH_CLIENTS               space-separated client counts (default "1 16 64")
#   BENCH_SCENARIOS             space-separated scenarios (default "register create list details")
set -euo pipefail

cd "$(dirname "$0")/.."

GATEWAY=${RIDESHARE_GATEWAY_URL:-http://127.0.0.1:8080}
ORCHESTRATOR=${RIDESHARE_ORCHESTRATOR_URL:-http://127.0.0.1:8083}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
read -ra CLIENTS <<<"${BENCH_CLIENTS:-1 16 64}"
read -ra SCENARIOS <<<"${BENCH_SCENARIOS:-register create list details}"
PASSWORD=3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f
# The route whose upcoming rides are listed; the random rides of the creation runs never use it.
LIST_SOURCE=101
LIST_DESTINATION=103

die() {
    echo "public_api.sh: error: $*" >&2
    exit 1
}

command -v wrk >/dev/null 2>&1 || die "wrk is not installed (scripts/setup.sh installs it)"

RUN_PID=
cleanup() {
    if [[ -n $RUN_PID ]]; then
        # TERM, not INT: a background job of a non-interactive shell starts with SIGINT ignored.
        kill -TERM "$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

now_ms() {
    date +%s%3N
}

if [[ ${1:-} == --start ]]; then
    scripts/setup.sh
    scripts/services.sh start
    cargo build --release --bins --quiet
    started=$(now_ms)
    ./run.sh >/tmp/rideshare-bench-run.log 2>&1 &
    RUN_PID=$!
    deadline=$((SECONDS + 120))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT "$GATEWAY/api/v1/users" \
        -d "{\"username\":\"first-$started\",\"password\":\"$PASSWORD\"}") == 201 ]]; do
        kill -0 "$RUN_PID" 2>/dev/null || die "./run.sh exited; see /tmp/rideshare-bench-run.log"
        ((SECONDS < deadline)) || die "no successful registration within 120 s"
        sleep 0.05
    done
    echo "from ./run.sh to the first successful registration: $(($(now_ms) - started)) ms"
fi

curl -fsS -o /dev/null "$GATEWAY/health" || die "no gateway at $GATEWAY (start ./run.sh, or pass --start)"

run_id=b$(date +%s)
future=$(date -u -d '+30 days' +%d-%m-%Y:%S-%M-%H)

put() { curl -fsS -o /dev/null -X PUT "$GATEWAY$1" -d "$2"; }
post() { curl -fsS -X POST "$GATEWAY$1" -d "$2"; }

# Fixtures: a driver, 100 upcoming rides between the two listed areas, and one ride with 10 members.
put /api/v1/users "{\"username\":\"$run_id-driver\",\"password\":\"$PASSWORD\"}"
for _ in $(seq 100); do
    post /api/v1/rides "{\"created_by\":\"$run_id-driver\",\"timestamp\":\"$future\",\"source\":$LIST_SOURCE,\"destination\":$LIST_DESTINATION}" >/dev/null
done
ride=$(post /api/v1/rides "{\"created_by\":\"$run_id-driver\",\"timestamp\":\"$future\",\"source\":1,\"destination\":2}" |
    tr -cd '0-9')
for i in $(seq 10); do
    put /api/v1/users "{\"username\":\"$run_id-rider$i\",\"password\":\"$PASSWORD\"}"
    post "/api/v1/rides/$ride" "{\"username\":\"$run_id-rider$i\"}" >/dev/null
done

# run_wrk NAME CLIENTS ARGS...: one wrk run, one line of the table.
run_wrk() {
    local name=$1 clients=$2 threads out
    shift 2
    threads=$((clients < 2 ? clients : 2))
    out=$(wrk --latency -t "$threads" -c "$clients" -d "${SECONDS_PER_RUN}s" "$@")
    awk -v name="$name" -v clients="$clients" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            return v
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { requests = $1 }
        /Requests\/sec/ { rps = $2 }
        /Non-2xx or 3xx/ { errors += $5 }
        /Socket errors/ { gsub(",", ""); errors += $4 + $6 + $8 + $10 }
        END { printf "%-10s %7d %9d %12.0f %9.2f %9.2f %7d\n", name, clients, requests, rps, p50, p99, errors }
    ' <<<"$out"
}

printf "%-10s %7s %9s %12s %9s %9s %7s\n" scenario clients requests throughput/s "p50 ms" "p99 ms" errors
for scenario in "${SCENARIOS[@]}"; do
    for clients in "${CLIENTS[@]}"; do
        case $scenario in
        register) run_wrk register "$clients" -s bench/wrk/register.lua "$GATEWAY" -- "$run_id-c$clients" ;;
        create) run_wrk create "$clients" -s bench/wrk/create_ride.lua "$GATEWAY" -- "$run_id-driver" "$future" ;;
        list) run_wrk list "$clients" "$GATEWAY/api/v1/rides?source=$LIST_SOURCE&destination=$LIST_DESTINATION" ;;
        details) run_wrk details "$clients" "$GATEWAY/api/v1/rides/$ride" ;;
        *) die "unknown scenario $scenario (register, create, list, details)" ;;
        esac
    done
done

# Memory: the process listening on each service's port (and nginx's workers), and the workers the orchestrator
# lists. Resident set size now, and the peak since the process started. When no orchestrator answers, the target
# is one process (the baseline of bench/compare.sh): the one listening on the gateway's port.
pid_on_port() {
    ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true
}
port_of() {
    local hostport=${1#*://}
    hostport=${hostport%%/*}
    echo "${hostport##*:}"
}
memory() {
    local name=$1 pid=$2
    [[ -r /proc/$pid/status ]] || return 0
    awk -v name="$name" -v pid="$pid" '
        /^VmRSS/ { rss = $2 } /^VmHWM/ { hwm = $2 }
        END { printf "%-14s %8d %10.1f %10.1f\n", name, pid, rss / 1024, hwm / 1024 }' "/proc/$pid/status"
}
echo
printf "%-14s %8s %10s %10s\n" process pid "RSS MiB" "peak MiB"
gateway_pid=$(pid_on_port "$(port_of "$GATEWAY")")
if workers=$(curl -fsS --max-time 5 "$ORCHESTRATOR/api/v1/worker/list" 2>/dev/null); then
    for name_port in "users:${RIDESHARE_USERS_PORT:-8081}" "rides:${RIDESHARE_RIDES_PORT:-8082}" \
        "orchestrator:$(port_of "$ORCHESTRATOR")"; do
        pid=$(pid_on_port "${name_port#*:}")
        if [[ -n $pid ]]; then
            memory "${name_port%%:*}" "$pid"
        fi
    done
    for pid in $(tr -c '0-9' ' ' <<<"$workers"); do
        memory worker "$pid"
    done
    if [[ -n $gateway_pid ]]; then
        master=$(ps -o ppid= -p "$gateway_pid" | tr -d ' ')
        [[ $(ps -o comm= -p "$master" 2>/dev/null) == nginx ]] || master=$gateway_pid
        memory "nginx master" "$master"
        for pid in $(pgrep -P "$master"); do
            memory "nginx worker" "$pid"
        done
    fi
elif [[ -n $gateway_pid ]]; then
    memory "$(ps -o comm= -p "$gateway_pid")" "$gateway_pid"
fi
