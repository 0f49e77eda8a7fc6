#!/usr/bin/env bash
# Installs the Debian packages Corral's nodelet and tests use, when they are missing.
set -euo pipefail
need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v conmon >/dev/null 2>&1 || need+=(conmon)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v nft >/dev/null 2>&1 || need+=(nftables)  # the partition tests cut links with it
command -v gcc >/dev/null 2>&1 || need+=(gcc)  # builds the static seccomp probe of the tests
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)  # pulls images from registries
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)  # the tests' registry on loopback
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
