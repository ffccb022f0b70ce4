#!/usr/bin/env bash
# The system against the baseline, in one sitting on this machine: bench/public_api.sh runs against the baseline
# (the public API in one process, `baseline`, bench/src/baseline) and against the system (./run.sh), one after
# the other, then the two are printed side by side, one row per scenario and number of clients. Figures only:
# nothing is asserted.
#
#   bench/compare.sh
#
# It builds the release binaries, starts RabbitMQ and ZooKeeper if they are not running (and stops them at the
# end if it started them), then for each round starts one target, benchmarks it and stops it, then the other.
# Every target starts empty. Its ports are its own (gateway 18080, users 18081, rides 18082, orchestrator 18083,
# baseline 18090), and so are its RabbitMQ and ZooKeeper namespace (`compare`) and its data (a temporary
# directory), so a system already running on this machine (./run.sh on 8080-8083) is left alone, though it
# shares the cores. Everything it started is stopped when it ends, Ctrl-C included.
#
# Environment (each optional):
#   BENCH_SECONDS      duration of each wrk run (default 10)
#   BENCH_CLIENTS      space-separated client counts (default "64")
#   BENCH_ROUNDS       how many times each target is measured, alternating between them (default 1)
#   BENCH_ORDER        baseline-first (default) or system-first: the target each round starts with
#   COMPARE_PORT_BASE  the gateway's port; users, rides and the orchestrator take the next three, the baseline
#                      this plus 10 (default 18080)
#   RIDESHARE_SCALE_INTERVAL_SECS  the orchestrator's scaling interval, passed to ./run.sh (default: its own)
#   RIDESHARE_NAMESPACE            the system's queues and znodes (default compare)
#   CARGO_TARGET_DIR   where cargo builds (default target). A target directory shared with another checkout
#                      gets this checkout's binaries in its release/ from the build: anything else started from
#                      there afterwards (./run.sh, dbbench and their workers) runs this checkout's code.

# shellcheck disable=SC2317 # cleanup runs from the EXIT trap, which shellcheck cannot follow
set -euo pipefail

cd "$(dirname "$0")/.."

export BENCH_SECONDS=${BENCH_SECONDS:-10}
export BENCH_CLIENTS=${BENCH_CLIENTS:-64}
ROUNDS=${BENCH_ROUNDS:-1}
ORDER=${BENCH_ORDER:-baseline-first}
PORT_BASE=${COMPARE_PORT_BASE:-18080}
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
# How long a target may take, once started (./run.sh: once it reports everything up), to answer a first
# registration: the system's orchestrator elects a master and syncs a slave first.
READY_TIMEOUT_SECS=120
PASSWORD=3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f

die() {
    echo "compare.sh: error: $*" >&2
    exit 1
}
log() {
    echo "compare.sh: $*" >&2
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, not $ROUNDS"
case $ORDER in
baseline-first) TARGETS=(baseline system) ;;
system-first) TARGETS=(system baseline) ;;
*) die "BENCH_ORDER must be baseline-first or system-first, not $ORDER" ;;
esac

GATEWAY_PORT=$PORT_BASE
USERS_PORT=$((PORT_BASE + 1))
RIDES_PORT=$((PORT_BASE + 2))
ORCHESTRATOR_PORT=$((PORT_BASE + 3))
BASELINE_PORT=$((PORT_BASE + 10))
for port in "$GATEWAY_PORT" "$USERS_PORT" "$RIDES_PORT" "$ORCHESTRATOR_PORT" "$BASELINE_PORT"; do
    if [[ -n $(ss -ltnH "sport = :$port") ]]; then
        die "port $port is in use (set COMPARE_PORT_BASE to use others)"
    fi
done

# The system's addresses, for ./run.sh; public_api.sh finds the processes for its memory table through the
# orchestrator's URL and the services' ports (while the baseline runs, no orchestrator answers there).
export RIDESHARE_GATEWAY_LISTEN=127.0.0.1:$GATEWAY_PORT RIDESHARE_USERS_LISTEN=127.0.0.1:$USERS_PORT
export RIDESHARE_RIDES_LISTEN=127.0.0.1:$RIDES_PORT RIDESHARE_ORCHESTRATOR_LISTEN=127.0.0.1:$ORCHESTRATOR_PORT
export RIDESHARE_ORCHESTRATOR_URL=http://$RIDESHARE_ORCHESTRATOR_LISTEN
export RIDESHARE_USERS_PORT=$USERS_PORT RIDESHARE_RIDES_PORT=$RIDES_PORT
export RIDESHARE_NAMESPACE=${RIDESHARE_NAMESPACE:-compare}

WORK=$(mktemp -d /tmp/rideshare-compare.XXXXXX)
TARGET_PID=
STARTED_INFRA=()
cleanup() {
    local status=$?
    trap '' INT TERM
    stop_target
    if ((${#STARTED_INFRA[@]} > 0)); then
        scripts/services.sh stop "${STARTED_INFRA[@]}" >&2 || true
    fi
    # A failure keeps the targets' logs for reading; a success or an interruption leaves nothing behind.
    case $status in
    0 | 130 | 143) rm -rf "$WORK" ;;
    *) log "logs kept in $WORK" ;;
    esac
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop_target: SIGTERM to the running target (the baseline, or ./run.sh, which stops what it started), and waits.
stop_target() {
    [[ -n $TARGET_PID ]] || return 0
    kill -TERM "$TARGET_PID" 2>/dev/null || true
    wait "$TARGET_PID" 2>/dev/null || true
    TARGET_PID=
}

# wait_ready NAME URL LOG [LINE]: waits until LOG holds LINE (when given: ./run.sh builds and starts each service
# with deadlines of its own), then polls until a registration at URL succeeds, while the target runs, with a
# deadline.
wait_ready() {
    local name=$1 url=$2 log_file=$3 line=${4:-} deadline probe=0
    if [[ -n $line ]]; then
        until grep -q "$line" "$log_file"; do
            kill -0 "$TARGET_PID" 2>/dev/null || die "the $name exited during start-up; see $log_file"
            sleep 0.5
        done
    fi
    deadline=$((SECONDS + READY_TIMEOUT_SECS))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT "$url/api/v1/users" \
        -d "{\"username\":\"compare-probe-$probe\",\"password\":\"$PASSWORD\"}") == 201 ]]; do
        kill -0 "$TARGET_PID" 2>/dev/null || die "the $name exited during start-up; see $log_file"
        ((SECONDS < deadline)) || die "the $name did not register a user within ${READY_TIMEOUT_SECS}s; see $log_file"
        probe=$((probe + 1))
        sleep 0.2
    done
}

# measure TARGET ROUND: starts the target empty, runs public_api.sh against it, stops it. Its table goes to
# $WORK/TARGET-ROUND.txt and to stdout as it runs.
measure() {
    local target=$1 round=$2 url log_file=$WORK/$1-$2.log ready_line=
    case $target in
    baseline)
        url=http://127.0.0.1:$BASELINE_PORT
        "$BIN_DIR/baseline" --listen "127.0.0.1:$BASELINE_PORT" --data-dir "$WORK/baseline-$round" \
            </dev/null >"$log_file" 2>&1 &
        ;;
    system)
        url=http://$RIDESHARE_GATEWAY_LISTEN
        RIDESHARE_RUN_DATA_DIR=$WORK/system-$round RIDESHARE_ORCHESTRATOR_DATA_DIR=$WORK/system-$round/orchestrator \
            ./run.sh </dev/null >"$log_file" 2>&1 &
        ready_line="RideShare is running"
        ;;
    esac
    TARGET_PID=$!
    wait_ready "$target" "$url" "$log_file" "$ready_line"
    echo
    echo "== $target, round $round/$ROUNDS ($url)"
    RIDESHARE_GATEWAY_URL=$url bench/public_api.sh | tee "$WORK/$target-$round.txt"
    stop_target
}

scripts/setup.sh
for infra in rabbitmq zookeeper; do
    if ! scripts/services.sh status "$infra" >/dev/null; then
        STARTED_INFRA+=("$infra")
    fi
done
scripts/services.sh start >&2
cargo build --release --bins

commit=$(git rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
    commit+=" (with uncommitted changes)"
fi
echo "compare.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $commit, $(nproc) cores"
echo "$BENCH_SECONDS s per run, clients: $BENCH_CLIENTS, $ROUNDS round(s), ${TARGETS[0]} first"
for ((round = 1; round <= ROUNDS; round++)); do
    for target in "${TARGETS[@]}"; do
        measure "$target" "$round"
    done
done

# The comparison: public_api.sh's rows (scenario clients requests throughput/s p50 p99 errors) of both targets,
# matched by scenario, clients and round; with several rounds, their means.
echo
echo "== system against baseline: ratio = system / baseline throughput; latencies in ms; errors system/baseline (the"
echo "   mean rows sum them)"
for ((round = 1; round <= ROUNDS; round++)); do
    for target in baseline system; do
        awk -v target="$target" -v round="$round" \
            '$1 ~ /^[a-z]+$/ && $1 != "scenario" && NF == 7 && $2 ~ /^[0-9]+$/ { print target, round, $0 }' \
            "$WORK/$target-$round.txt"
    done
done | awk -v rounds="$ROUNDS" '
    {
        key = $3 " " $4
        if (!(key in seen)) { seen[key] = 1; keys[++n] = key }
        rps[$1, key, $2] = $6; p50[$1, key, $2] = $7; p99[$1, key, $2] = $8; err[$1, key, $2] = $9
    }
    function row(label, s_rps, b_rps, s50, s99, b50, b99, s_err, b_err) {
        printf "%-10s %7s %5s %10.0f %10.0f %6.3f %8.2f %8.2f %8.2f %8.2f %9s\n", scenario, clients, label,
            s_rps, b_rps, (b_rps > 0 ? s_rps / b_rps : 0), s50, s99, b50, b99, s_err "/" b_err
    }
    END {
        printf "%-10s %7s %5s %10s %10s %6s %8s %8s %8s %8s %9s\n", "scenario", "clients", "round",
            "system/s", "base/s", "ratio", "sys p50", "sys p99", "base p50", "base p99", "errors"
        for (i = 1; i <= n; i++) {
            split(keys[i], k, " "); scenario = k[1]; clients = k[2]
            split("", sum)
            for (r = 1; r <= rounds; r++) {
                row(r, rps["system", keys[i], r], rps["baseline", keys[i], r],
                    p50["system", keys[i], r], p99["system", keys[i], r],
                    p50["baseline", keys[i], r], p99["baseline", keys[i], r],
                    err["system", keys[i], r], err["baseline", keys[i], r])
                sum["s_rps"] += rps["system", keys[i], r]; sum["b_rps"] += rps["baseline", keys[i], r]
                sum["s50"] += p50["system", keys[i], r]; sum["s99"] += p99["system", keys[i], r]
                sum["b50"] += p50["baseline", keys[i], r]; sum["b99"] += p99["baseline", keys[i], r]
                sum["s_err"] += err["system", keys[i], r]; sum["b_err"] += err["baseline", keys[i], r]
            }
            if (rounds > 1) {
                row("mean", sum["s_rps"] / rounds, sum["b_rps"] / rounds, sum["s50"] / rounds,
                    sum["s99"] / rounds, sum["b50"] / rounds, sum["b99"] / rounds, sum["s_err"], sum["b_err"])
            }
        }
    }'

# Memory: the sum of the peaks of public_api.sh's memory table (every process of the target).
echo
for ((round = 1; round <= ROUNDS; round++)); do
    for target in system baseline; do
        awk -v target="$target" -v round="$round" '
            /^process / { table = 1; next }
            table && NF >= 4 { peak += $NF; n++ }
            END {
                printf "memory, %-8s round %d: %7.1f MiB (the sum of the peaks of its %d process(es))\n",
                    target, round, peak, n
            }
        ' "$WORK/$target-$round.txt"
    done
done
