#!/usr/bin/env bash
# Starts, stops or reports on the two infrastructure services RideShare needs on this machine:
# RabbitMQ (AMQP on 127.0.0.1:5672) and ZooKeeper (127.0.0.1:2181).
#
#   scripts/services.sh start|stop|status [rabbitmq] [zookeeper]
#
# With no service named, acts on both. `start` starts only what is not already answering and waits, with a
# deadline, until it answers; `stop` stops only what is running; `status` exits 0 when every named service answers
# and 3 otherwise. Needs root (or sudo): the Debian packages run RabbitMQ as its own user and keep ZooKeeper's
# logs in /var/log/zookeeper.
#
# Environment:
#   RIDESHARE_SERVICES_TIMEOUT_SECS  how long to wait for a service to answer or stop (default 60)
#   RIDESHARE_STATE_DIR              where ZooKeeper's config and data live (default /var/lib/rideshare)
set -euo pipefail

TIMEOUT_SECS=${RIDESHARE_SERVICES_TIMEOUT_SECS:-60}
STATE_DIR=${RIDESHARE_STATE_DIR:-/var/lib/rideshare}

RABBITMQ_SERVER=/usr/sbin/rabbitmq-server
RABBITMQCTL=/usr/sbin/rabbitmqctl
RABBITMQ_HOST=127.0.0.1
RABBITMQ_PORT=5672

ZK_SERVER=/usr/share/zookeeper/bin/zkServer.sh
ZK_HOST=127.0.0.1
ZK_PORT=2181
ZK_DIR=$STATE_DIR/zookeeper
ZK_CONFIG=$ZK_DIR/zoo.cfg
ZK_DATA_DIR=$ZK_DIR/data
# The config Debian ships: a ZooKeeper started with it (by hand, or by an earlier setup) keeps its pid file in
# that config's dataDir, and `stop` must find it there too.
ZK_DEBIAN_CONFIG=/etc/zookeeper/conf/zoo.cfg

log() {
    echo "services.sh: $*" >&2
}

die() {
    echo "services.sh: error: $*" >&2
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

# True when something accepts TCP connections on host $1, port $2.
port_open() {
    # shellcheck disable=SC2016 # $1 and $2 expand in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Polls "$@" every half second until it succeeds; false once TIMEOUT_SECS have passed.
wait_until() {
    local deadline=$((SECONDS + TIMEOUT_SECS))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

not() {
    ! "$@"
}

# --- RabbitMQ ----------------------------------------------------------------------------------------------------

rabbitmq_node_up() {
    as_root "$RABBITMQCTL" -q status >/dev/null 2>&1
}

rabbitmq_ready() {
    rabbitmq_node_up && port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"
}

rabbitmq_start() {
    if rabbitmq_ready; then
        return 0
    fi
    [[ -x $RABBITMQ_SERVER ]] || die "$RABBITMQ_SERVER not found: run scripts/setup.sh first"
    if ! rabbitmq_node_up; then
        log "starting rabbitmq"
        # AMQP listens on loopback only. Erlang's own ports (epmd 4369, distribution 25672) keep their defaults:
        # rabbitmqctl reaches the node through the host name, which need not resolve to 127.0.0.1.
        as_root env RABBITMQ_NODE_IP_ADDRESS="$RABBITMQ_HOST" RABBITMQ_NODE_PORT="$RABBITMQ_PORT" \
            "$RABBITMQ_SERVER" -detached >/dev/null 2>&1 ||
            die "rabbitmq-server -detached failed; see /var/log/rabbitmq/"
    fi
    if ! wait_until rabbitmq_ready; then
        as_root sh -c 'tail -n 20 /var/log/rabbitmq/*.log' >&2 2>/dev/null || true
        die "rabbitmq did not answer on $RABBITMQ_HOST:$RABBITMQ_PORT within ${TIMEOUT_SECS}s; logs in /var/log/rabbitmq/"
    fi
    log "rabbitmq is ready on $RABBITMQ_HOST:$RABBITMQ_PORT"
}

rabbitmq_stop() {
    if ! rabbitmq_node_up; then
        return 0
    fi
    log "stopping rabbitmq"
    # `stop` returns once the node has shut down.
    as_root "$RABBITMQCTL" -q stop >/dev/null || die "rabbitmqctl stop failed"
}

# --- ZooKeeper ---------------------------------------------------------------------------------------------------

# `srvr` is the one four-letter command ZooKeeper 3.8 allows by default (`ruok` is off unless whitelisted).
zookeeper_ready() {
    local reply
    # shellcheck disable=SC2016 # $1 and $2 expand in the inner shell
    reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf srvr >&3 && cat <&3' _ "$ZK_HOST" "$ZK_PORT" \
        2>/dev/null) || return 1
    [[ $reply == *"Mode: "* ]]
}

# Our own config rather than Debian's: loopback only, a data directory that survives a reboot (Debian's example
# config uses /tmp/zookeeper), no AdminServer (it would take port 8080, the gateway's), and no cap on connections
# per client address (every worker of every test cluster connects from 127.0.0.1; the default cap is 60).
zookeeper_write_config() {
    local wanted
    wanted=$(
        cat <<EOF
# Written by scripts/services.sh; edits are overwritten.
tickTime=2000
dataDir=$ZK_DATA_DIR
clientPort=$ZK_PORT
clientPortAddress=$ZK_HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
EOF
    )
    as_root mkdir -p "$ZK_DATA_DIR"
    if [[ "$(cat "$ZK_CONFIG" 2>/dev/null || true)" != "$wanted" ]]; then
        printf '%s\n' "$wanted" | as_root tee "$ZK_CONFIG" >/dev/null
    fi
}

# Prints "PID PIDFILE" for the ZooKeeper that zkServer.sh started, from its pid file under our config's dataDir or
# Debian's, if that process still runs ZooKeeper (a stale pid file may name an unrelated process).
zookeeper_pid() {
    local debian_data_dir pidfile pid
    debian_data_dir=$(sed -n 's/^[[:space:]]*dataDir[[:space:]]*=[[:space:]]*//p' "$ZK_DEBIAN_CONFIG" 2>/dev/null |
        tail -n 1 || true)
    for pidfile in "$ZK_DATA_DIR/zookeeper_server.pid" ${debian_data_dir:+"$debian_data_dir/zookeeper_server.pid"}; do
        pid=$(as_root cat "$pidfile" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q zookeeper; then
            echo "$pid $pidfile"
            return 0
        fi
    done
    return 1
}

zookeeper_start() {
    if zookeeper_ready; then
        return 0
    fi
    [[ -x $ZK_SERVER ]] || die "$ZK_SERVER not found: run scripts/setup.sh first"
    if ! zookeeper_pid >/dev/null; then
        zookeeper_write_config
        # zkServer.sh refuses to start while its pid file names a live process, even an unrelated one.
        as_root rm -f "$ZK_DATA_DIR/zookeeper_server.pid"
        log "starting zookeeper (config $ZK_CONFIG)"
        # JMXDISABLE: no JMX port; nothing here uses it.
        as_root env JMXDISABLE=true "$ZK_SERVER" start "$ZK_CONFIG" >/dev/null 2>&1 ||
            die "zkServer.sh start failed; see /var/log/zookeeper/"
    fi
    if ! wait_until zookeeper_ready; then
        die "zookeeper did not answer on $ZK_HOST:$ZK_PORT within ${TIMEOUT_SECS}s; see /var/log/zookeeper/*.out"
    fi
    log "zookeeper is ready on $ZK_HOST:$ZK_PORT"
}

zookeeper_stop() {
    local pid pidfile
    if ! read -r pid pidfile < <(zookeeper_pid); then
        if zookeeper_ready; then
            die "zookeeper answers on $ZK_HOST:$ZK_PORT but has no zkServer.sh pid file; stop it the way it was started"
        fi
        return 0
    fi
    log "stopping zookeeper (pid $pid)"
    as_root kill "$pid" 2>/dev/null || true
    if ! wait_until not test -e "/proc/$pid"; then
        log "zookeeper did not exit within ${TIMEOUT_SECS}s of SIGTERM; killing it"
        as_root kill -KILL "$pid" 2>/dev/null || true
    fi
    as_root rm -f "$pidfile"
}

# --- main --------------------------------------------------------------------------------------------------------

usage() {
    echo "usage: $0 start|stop|status [rabbitmq] [zookeeper]" >&2
    exit 2
}

(($# >= 1)) || usage
action=$1
shift
services=("$@")
((${#services[@]} > 0)) || services=(rabbitmq zookeeper)
for service in "${services[@]}"; do
    [[ $service == rabbitmq || $service == zookeeper ]] || usage
done

case $action in
start)
    for service in "${services[@]}"; do "${service}_start"; done
    ;;
stop)
    # Reverse order: the last started is the first stopped.
    for ((i = ${#services[@]} - 1; i >= 0; i--)); do "${services[i]}_stop"; done
    ;;
status)
    status=0
    for service in "${services[@]}"; do
        if "${service}_ready"; then
            echo "$service: running"
        else
            echo "$service: not running"
            status=3
        fi
    done
    exit "$status"
    ;;
*)
    usage
    ;;
esac
