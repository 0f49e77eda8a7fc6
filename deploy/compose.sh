#!/usr/bin/env bash
# The compose demo, from nothing, on a machine with Docker (docker-compose v1 or `docker compose` v2):
#   deploy/compose.sh up      build what is missing, start NATS, the control plane and three nodelets, wait for
#                             the nodes, run sample containers and a 3-replica service, say how to reach the API
#   deploy/compose.sh build   only the image (a wheelhouse built on the host; a base image from Debian packages
#                             when python:3.12-slim cannot be pulled)
#   deploy/compose.sh down    remove the demo's containers, network, volumes (its log and identities), image,
#                             base image built from Debian packages (CORRAL_KEEP_BASE=1 keeps it) and wheelhouse
#   deploy/compose.sh token   print the admin token;  deploy/compose.sh env   print CORRAL_ADDR/CORRAL_TOKEN exports
#   deploy/compose.sh compose ARGS...   run docker-compose on the demo's file (ps, logs, kill, start ...)
set -euo pipefail
cd "$(dirname "$0")/.."
# Another, unrelated `docker` client may come first on PATH: prefer the engine's own.
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true )}
[ -n "$DOCKER" ] || { echo "docker is not installed" >&2; exit 1; }
export DOCKER COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
FILE=deploy/docker-compose.yml
PORT=${CORRAL_PORT:-8080}
# The project name also sits in deploy/.env (for docker-compose run by hand there); given here, since some
# Compose v2 releases read .env from the working directory rather than the compose file's.
PROJECT=${COMPOSE_PROJECT_NAME:-corral-demo}
if "$DOCKER" compose version >/dev/null 2>&1; then compose=("$DOCKER" compose -p "$PROJECT" -f "$FILE")
elif command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose -p "$PROJECT" -f "$FILE")
else echo "neither 'docker compose' nor docker-compose is installed" >&2; exit 1; fi
C=.venv/bin/corral

wheelhouse() {
  # Containers may be unable to reach the package index (here its TLS is intercepted by a proxy only the host
  # trusts): build every wheel on the host, for the host's Python and for the default base's 3.12.
  make -s setup >/dev/null
  rm -f deploy/wheels/corral-*.whl
  .venv/bin/pip wheel -q --disable-pip-version-check -w deploy/wheels '.[nats]' 2> >(grep -v '^WARNING: Location' >&2)
  rm -rf build  # setuptools' leftovers from building corral's wheel
  mapfile -t deps < <(.venv/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["nats"]))')
  # (find-links: a package published only as source, such as nkeys, is used as the wheel built above)
  .venv/bin/pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
    --find-links deploy/wheels \
    -d deploy/wheels "${deps[@]}" 2> >(grep -v '^WARNING: Location' >&2)
}

base_image() {
  if [ -n "${CORRAL_BASE_IMAGE:-}" ]; then echo "$CORRAL_BASE_IMAGE"; return; fi
  if "$DOCKER" image inspect python:3.12-slim >/dev/null 2>&1 || "$DOCKER" pull -q python:3.12-slim >/dev/null 2>&1; then
    echo python:3.12-slim; return
  fi
  if ! "$DOCKER" image inspect corral-base:bookworm >/dev/null 2>&1; then
    echo "python:3.12-slim cannot be pulled (no registry reachable): building corral-base:bookworm from Debian packages" >&2
    bash deploy/build-base-image.sh corral-base:bookworm >&2
  fi
  echo corral-base:bookworm
}

build() {
  wheelhouse
  CORRAL_BASE_IMAGE=$(base_image)
  export CORRAL_BASE_IMAGE
  echo "building corral:demo on $CORRAL_BASE_IMAGE" >&2
  "${compose[@]}" build -q keys >&2
}

token() { "${compose[@]}" exec -T controlplane cat /run/secrets/corral/admin-token; }

wait_nodes() {  # until $1 nodes are ready, at most $2 seconds
  local deadline=$((SECONDS + $2))
  until [ "$($C nodes -o json 2>/dev/null | .venv/bin/python -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if not n["lost"] and not n["cordoned"]))' 2>/dev/null || echo 0)" -ge "$1" ]; do
    [ $SECONDS -lt $deadline ] || { echo "the nodes did not become ready in $2 s" >&2; "${compose[@]}" ps >&2; exit 1; }
    sleep 0.5
  done
}

wait_running() {  # until $1 containers run, at most $2 seconds
  local deadline=$((SECONDS + $2))
  until [ "$($C ps -o json 2>/dev/null | .venv/bin/python -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c["state"] == "running"))' 2>/dev/null || echo 0)" -ge "$1" ]; do
    [ $SECONDS -lt $deadline ] || { echo "not $1 containers running after $2 s" >&2; $C ps -a >&2; exit 1; }
    sleep 0.5
  done
}

case "${1:-up}" in
  build) build ;;
  up)
    "$DOCKER" image inspect "${CORRAL_IMAGE:-corral:demo}" >/dev/null 2>&1 || build
    export CORRAL_BASE_IMAGE=${CORRAL_BASE_IMAGE:-python:3.12-slim}  # only read when building
    "${compose[@]}" up -d
    export CORRAL_ADDR="http://127.0.0.1:$PORT" CORRAL_TOKEN; CORRAL_TOKEN=$(token)
    wait_nodes 3 60
    $C run --rm --name hello busybox -- sh -c 'echo hello from a container that runc runs inside a nodelet container'
    $C run -d --name db --qos LSR --cpu-request 1 --memory 64Mi busybox -- sleep 3600
    $C run -d --name web --cpu-request 250m --cpu-limit 500m --memory 64Mi busybox -- sh -c 'while :; do sleep 1; done'
    $C service create echo busybox --replicas 3 --cpu-request 100m --memory 32Mi -- sleep 3600
    wait_running 5 30
    $C ps
    $C nodes
    cat <<MSG

The demo runs (three nodelets, each running its containers with runc inside its own container). The API listens on
$CORRAL_ADDR. The CLI, another shell or any HTTP client reaches it with:
  eval "\$(deploy/compose.sh env)"      # CORRAL_ADDR and CORRAL_TOKEN (the admin token, read from the control plane's volume)
  .venv/bin/corral ps
Look inside a node: deploy/compose.sh compose exec nodelet1 runc --root /run/corral/node-1/rt/runc list
Remove it all: make compose-down
MSG
    ;;
  token) token ;;
  env) echo "export CORRAL_ADDR=http://127.0.0.1:$PORT CORRAL_TOKEN=$(token)" ;;
  down)
    "${compose[@]}" down -v --remove-orphans --timeout 20
    "$DOCKER" image rm "${CORRAL_IMAGE:-corral:demo}" >/dev/null 2>&1 || true
    # What `build` made for itself: the base from Debian packages (not a pulled python image) and the wheelhouse.
    [ -n "${CORRAL_KEEP_BASE:-}" ] || "$DOCKER" image rm corral-base:bookworm >/dev/null 2>&1 || true
    rm -f deploy/wheels/*.whl
    ;;
  compose) shift; "${compose[@]}" "$@" ;;
  *) echo "usage: $0 up|build|down|token|env|compose ARGS..." >&2; exit 2 ;;
esac
