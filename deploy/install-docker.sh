#!/usr/bin/env bash
# Docker for the compose demo and its test: Debian's engine and Compose v1 when missing, and the engine started
# when it does not answer (CI machines have no init system to start it).
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
[ -x /usr/bin/docker ] || command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || /usr/bin/docker compose version >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
DOCKER=$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker )
if ! $sudo "$DOCKER" info >/dev/null 2>&1; then
  echo "starting dockerd (log: /var/log/corral-dockerd.log)" >&2
  $sudo sh -c 'nohup dockerd >/var/log/corral-dockerd.log 2>&1 &'
  for _ in $(seq 150); do $sudo "$DOCKER" info >/dev/null 2>&1 && exit 0; sleep 0.2; done
  echo "dockerd did not come up in 30 s; the end of its log:" >&2
  $sudo tail -20 /var/log/corral-dockerd.log >&2
  exit 1
fi
