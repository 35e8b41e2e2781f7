#!/usr/bin/env bash
# 'make compose-test': a Docker engine started by hand (no systemd), the lab's image built from
# wheels made here (no image can be pulled), the compose test, and everything stopped again —
# bounded in time, and cleaned up on failure too. The engine's data root is kept as a cache
# (the base image takes about a minute to make); its containers, networks and volumes are not.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${SIPLAB_DOCKER_CACHE:-/var/cache/siplab-docker}
BASE_IMAGE=local/python-base
WORK=$(mktemp -d /tmp/siplab-compose.XXXXXX)
export DOCKER_HOST=unix://$WORK/docker.sock
DOCKER=/usr/bin/docker  # Debian's client, of the engine's own version
dockerd_pid=""
started=$(date +%s)

say() { echo "compose-test: $* ($(($(date +%s) - started)) s)"; }

stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
}

cleanup() {
    local status=$?
    stop_dockerd
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Container networks come from 198.18.0.0/16 (RFC 2544's benchmarking range) and nothing else;
# no iptables rules, no forwarding, no default bridge: the host's network is left as it was.
start_dockerd() {
    mkdir -p "$CACHE/data-$1"
    dockerd --data-root "$CACHE/data-$1" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        -H "$DOCKER_HOST" --storage-driver "$1" --iptables=false --ip-forward=false \
        --bridge=none --default-address-pool base=198.18.0.0/16,size=24 \
        >"$WORK/dockerd-$1.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 150); do
        if $DOCKER info >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    stop_dockerd
    return 1
}
start_dockerd overlay2 || start_dockerd vfs || {
    tail -n 20 "$WORK"/dockerd-*.log
    exit 1
}
say "dockerd $dockerd_pid ready"
# Whatever a run that was stopped hard may have left (the cache keeps images only).
$DOCKER container prune -f >/dev/null
$DOCKER network prune -f >/dev/null
$DOCKER volume prune -f >/dev/null

if ! $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    # The machine's own Debian mirror, as apt is configured (never a host named here).
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv bookworm \
        "$WORK/rootfs" ${mirror:+"$mirror"} >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 20 "$WORK/debootstrap.log"
        exit 1
    }
    tar -C "$WORK/rootfs" -c . | $DOCKER import - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
    say "base image $BASE_IMAGE made"
fi

# The project and its dependencies as wheels for the image's Python (Debian's, like the host's).
rm -rf build/wheels
SIPLAB_COMPILE=0 timeout 600 .venv/bin/pip wheel --quiet --wheel-dir build/wheels . 2>"$WORK/pip.log" || {
    cat "$WORK/pip.log"
    exit 1
}
timeout 900 $DOCKER build --quiet --build-arg "BASE=$BASE_IMAGE" --tag siplab . >/dev/null
$DOCKER image prune -f >/dev/null  # the previous build's image, now untagged
say "image siplab built"

test_started=$(date +%s)
SIPLAB_COMPOSE_TEST=1 timeout 900 .venv/bin/python -m pytest -q -p no:cacheprovider \
    -o addopts="" tests/containers
say "compose test passed in $(($(date +%s) - test_started)) s"
