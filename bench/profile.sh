#!/usr/bin/env bash
# Where the CPU goes under the public API benchmark: starts the system (./run.sh, release build) on ports of its
# own, records every process on the machine with perf (call stacks unwound from DWARF, so release binaries need no
# frame pointers) while bench/public_api.sh runs its scenarios, then writes one flame graph per process and a
# table of each process's share of the samples. Figures only: nothing is asserted.
#
#   bench/profile.sh [OUT_DIR]        (default target/profile; needs root or perf_event_paranoid <= 1)
#
# Environment (each optional):
#   PROFILE_FREQ     samples per second per CPU (default 199)
#   BENCH_SECONDS    length of each scenario (default 5), BENCH_CLIENTS (default 64): passed to public_api.sh
#   BENCH_SCENARIOS  which scenarios (default all four), passed to public_api.sh
#   RIDESHARE_MAX_SLAVES, RIDESHARE_INITIAL_SLAVES, RIDESHARE_SCALE_INTERVAL_SECS: passed to the orchestrator
#
# Writes OUT_DIR/<process>.svg (inferno's flame graphs: `cargo install inferno`), OUT_DIR/<process>.folded,
# OUT_DIR/shares.txt and OUT_DIR/bench.txt (the benchmark's own table).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
out=$(realpath -m "${1:-target/profile}")
mkdir -p "$out"

die() {
    echo "profile.sh: error: $*" >&2
    exit 1
}
command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
command -v inferno-collapse-perf >/dev/null || die "inferno is not installed (cargo install inferno)"

export RIDESHARE_GATEWAY_LISTEN=127.0.0.1:28080 RIDESHARE_USERS_LISTEN=127.0.0.1:28081
export RIDESHARE_RIDES_LISTEN=127.0.0.1:28082 RIDESHARE_ORCHESTRATOR_LISTEN=127.0.0.1:28083
export RIDESHARE_GATEWAY_URL=http://$RIDESHARE_GATEWAY_LISTEN RIDESHARE_ORCHESTRATOR_URL=http://$RIDESHARE_ORCHESTRATOR_LISTEN
export RIDESHARE_USERS_PORT=28081 RIDESHARE_RIDES_PORT=28082
# Its own queues and znodes, so that a system already running on this machine is not disturbed.
export RIDESHARE_NAMESPACE=${RIDESHARE_NAMESPACE:-profile}
export BENCH_SECONDS=${BENCH_SECONDS:-5} BENCH_CLIENTS=${BENCH_CLIENTS:-64}

BENCH_PID=''
PERF_PID=''
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    [[ -n $BENCH_PID ]] && kill -TERM "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT

# public_api.sh --start builds, starts ./run.sh and makes its fixtures; recording starts with its first
# scenario (the table's header line) and stops when it ends.
bench/public_api.sh --start >"$out/bench.txt" 2>"$out/bench.err" &
BENCH_PID=$!
until grep -q '^scenario' "$out/bench.txt" 2>/dev/null; do
    kill -0 "$BENCH_PID" 2>/dev/null || die "public_api.sh failed: $(tail -5 "$out/bench.err")"
    sleep 0.2
done
perf record -q -a -F "${PROFILE_FREQ:-199}" --call-graph dwarf,16384 -o "$out/perf.data" 2>"$out/perf.err" &
PERF_PID=$!
until grep -q '^process' "$out/bench.txt" 2>/dev/null; do
    kill -0 "$BENCH_PID" 2>/dev/null || break
    sleep 0.2
done
# perf names a sample by its thread (tokio's "tokio-runtime-w", RabbitMQ's schedulers): the process of each pid,
# taken while the system still runs, names it by its program instead.
ps -eo pid=,comm= >"$out/pids.txt"
kill -INT "$PERF_PID"
wait "$PERF_PID" || true
PERF_PID=
wait "$BENCH_PID" || die "public_api.sh failed: $(tail -5 "$out/bench.err")"
BENCH_PID=
cat "$out/bench.txt"

# Folded stacks whose first frame is "thread-pid", renamed to the process's program (to the thread's name for a
# process gone by then: wrk's runs, or the idle "swapper"), then one file and one flame graph per program.
perf script -i "$out/perf.data" -F comm,pid,tid,time,event,ip,sym,dso 2>/dev/null |
    inferno-collapse-perf --pid --all 2>/dev/null |
    awk 'NR == FNR { name[$1] = $2; next }
         { first = $0; sub(/;.*/, "", first); pid = first; sub(/.*-/, "", pid)
           rest = substr($0, length(first) + 1)
           comm = first; sub(/-[0-9]+$/, "", comm)
           print ((pid in name) ? name[pid] : comm) rest }' "$out/pids.txt" - >"$out/all.folded"
echo
printf "%-20s %8s %7s\n" process samples share
awk '{ n = $NF; p = $0; sub(/;.*/, "", p); s[p] += n; t += n }
     END { for (k in s) printf "%-20s %8d %6.1f%%\n", k, s[k], 100 * s[k] / t }' "$out/all.folded" |
    sort -k2 -nr | head -15 | tee "$out/shares.txt"
for name in orchestrator worker users rides nginx beam.smp wrk; do
    grep "^$name" "$out/all.folded" >"$out/$name.folded" || continue
    inferno-flamegraph --title "$name (bench/profile.sh, $(git -C "$root" rev-parse --short HEAD))" \
        <"$out/$name.folded" >"$out/$name.svg"
done
echo
echo "flame graphs: $out/*.svg"
