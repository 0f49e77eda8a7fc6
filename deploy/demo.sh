#!/usr/bin/env bash
# The README's first command: set up, bring up a 3-node local cluster, run sample containers, show them.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
C=.venv/bin/corral
$C down >/dev/null 2>&1 || true
$C up --nodes 3
$C run --rm --name hello busybox -- sh -c "echo hello from corral"
$C run -d --name db --qos LSR --cpu-request 1 --memory 64Mi busybox -- sleep 3600
$C run -d --name web --cpu-request 250m --cpu-limit 500m --memory 64Mi busybox -- sh -c 'while :; do sleep 1; done'
$C run -d --name batch busybox -- sleep 3600
$C ps
$C nodes
echo
echo "The cluster keeps running. Try: $C ps -a | $C inspect <id> | $C events | $C plan --qos LSR --cpu-request 1 --memory 64Mi busybox | $C down"
