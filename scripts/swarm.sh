#!/usr/bin/env bash
# The whole system as a Docker Swarm stack (docker-stack.yml).
#
#   scripts/swarm.sh deploy [STACK]   installs what is missing (scripts/setup.sh), makes this engine a one-node
#                                     swarm if it is in none
#                                     (`docker swarm init --advertise-addr 127.0.0.1`), builds the images
#                                     (scripts/docker-build.sh), deploys the stack (default name rideshare) and
#                                     waits until the public API answers through the gateway
#   scripts/swarm.sh rm [STACK]       removes the stack; the orchestrator stops its workers first, and every
#                                     volume stays (ZooKeeper's and the workers' copies): a later deploy restarts
#                                     the workers on their copies
#   scripts/swarm.sh leave            leaves the swarm (`docker swarm leave --force`), removing what runs in it
#
# Environment: that of docker-stack.yml (ports, namespace, network, scaling), and RIDESHARE_SKIP_BUILD=1 to use
# the images as they are (and install nothing). On a swarm of several nodes, run it on a manager, with the images on every node.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() {
    echo "swarm.sh: $*" >&2
}

die() {
    echo "swarm.sh: error: $*" >&2
    exit 1
}

action=${1:-}
stack=${2:-rideshare}

# What a fresh machine lacks (Docker's engine among it, and what the images' build needs), installed first.
if [[ $action == deploy && ${RIDESHARE_SKIP_BUILD:-} != 1 ]]; then
    scripts/setup.sh
fi
command -v docker >/dev/null 2>&1 || die "no docker command: run scripts/setup.sh (it installs docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers"

swarm_state() {
    docker info --format '{{.Swarm.LocalNodeState}}'
}

case $action in
deploy)
    if [[ $(swarm_state) != active ]]; then
        log "this engine is in no swarm: making it a one-node swarm"
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    fi
    [[ $(docker info --format '{{.Swarm.ControlAvailable}}') == true ]] ||
        die "this engine is a swarm worker, not a manager: run this on a manager"
    if [[ ${RIDESHARE_SKIP_BUILD:-} != 1 ]]; then
        scripts/docker-build.sh
    fi
    # The images are local (nothing is pulled): the stack uses them as they are.
    docker stack deploy --resolve-image never --prune -c docker-stack.yml "$stack"
    port=${RIDESHARE_GATEWAY_PORT:-8080}
    log "waiting for the public API on http://127.0.0.1:$port"
    for _ in $(seq 1 180); do
        if curl -fsS "http://127.0.0.1:$port/api/v1/users" >/dev/null 2>&1; then
            log "the public API answers on http://127.0.0.1:$port"
            docker stack services "$stack"
            exit 0
        fi
        sleep 1
    done
    docker stack ps --no-trunc "$stack" >&2 || true
    die "the public API did not answer within 180 s"
    ;;
rm)
    # `stack rm` removes the stack's services at once, but not the network while the orchestrator's worker
    # services are attached to it (it says so, and fails): the orchestrator stops them as it shuts down, then the
    # network is removed here.
    docker stack rm "$stack" || true
    network=${RIDESHARE_NETWORK:-rideshare-swarm}
    namespace=${RIDESHARE_NAMESPACE:-rideshare}
    for _ in $(seq 1 120); do
        left=$(docker ps --all --quiet --filter "label=com.docker.stack.namespace=$stack")
        left+=$(docker service ls --quiet --filter "label=org.rideshare.namespace=$namespace")
        left+=$(docker ps --all --quiet --filter "label=org.rideshare.namespace=$namespace")
        if [[ -z $left ]]; then
            if docker network inspect "$network" >/dev/null 2>&1; then
                docker network rm "$network" >/dev/null
            fi
            log "stack $stack removed; its volumes stay (docker volume ls)"
            exit 0
        fi
        sleep 1
    done
    die "stack $stack or its workers are still there after 120 s"
    ;;
leave)
    docker swarm leave --force
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
