#!/usr/bin/env bash
# A local three-node a3redis cluster in Docker (deploy/compose.yaml).
#
#   ./deploy/compose.sh          build the image and start node1..node3 (same as `up`)
#   ./deploy/compose.sh up       the same
#   ./deploy/compose.sh status   containers and their health
#   ./deploy/compose.sh logs     follow all nodes' logs (`logs node2` for one)
#   ./deploy/compose.sh down     stop and remove the containers, keep the data volumes
#   ./deploy/compose.sh clean    stop and remove the containers and the data volumes
#
# The first `up` writes a random cluster secret to deploy/cluster-secret (kept, never
# committed); every node reads it as a Compose secret. Delete it only with the cluster.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
compose_file="$here/compose.yaml"

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
    echo "compose.sh: $*" >&2
    exit 1
}

require_docker() {
    command -v docker >/dev/null 2>&1 \
        || die "docker is not installed (or not on PATH); install Docker Engine with the compose plugin"
    docker compose version >/dev/null 2>&1 \
        || die "'docker compose' (Compose v2 plugin) is not available; install docker-compose-plugin"
    docker info >/dev/null 2>&1 \
        || die "cannot reach the Docker engine; is the daemon running and may this user use it?"
}

compose() {
    docker compose -f "$compose_file" "$@"
}

# The cluster secret, made once: 32 random bytes as 44 characters of base64. Compose
# mounts a file secret with the file's own owner and mode, and the node runs as uid
# 10001, so the file is readable by others on this host (keep the checkout private).
ensure_secret() {
    local secret="$here/cluster-secret"
    if [[ ! -s "$secret" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 >"$secret.tmp")
        chmod 0644 "$secret.tmp"
        mv "$secret.tmp" "$secret"
        echo "generated the cluster secret in $secret"
    fi
}

command="${1:-up}"
if [[ $# -gt 0 ]]; then
    shift
fi

case "$command" in
    up)
        require_docker
        ensure_secret
        compose up -d --build "$@"
        echo "started: gRPC 127.0.0.1:50051-50053, HTTP http://127.0.0.1:8001-8003"
        echo "check:   curl http://127.0.0.1:8001/membership"
        ;;
    status)
        require_docker
        compose ps "$@"
        ;;
    logs)
        require_docker
        compose logs --follow "$@"
        ;;
    down)
        require_docker
        compose down "$@"
        ;;
    clean)
        require_docker
        compose down --volumes --remove-orphans "$@"
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        die "unknown command '$command'"
        ;;
esac
