#!/usr/bin/env bash
# Builds corral-base:bookworm, a base image for deploy/Dockerfile made from Debian packages, for machines that
# cannot pull python:3.12-slim from a registry. mmdebstrap uses the host's Debian mirror; the root filesystem is
# piped straight into `docker import` (nothing lands on disk). About 30-40 s and 150 MB.
#   deploy/build-base-image.sh [TAG]        (default corral-base:bookworm; rebuilds when the tag exists too)
set -euo pipefail
tag=${1:-corral-base:bookworm}
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker )}
if ! command -v mmdebstrap >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mmdebstrap >/dev/null
fi
# The merged-usr hook keeps perl out (usrmerge would pull it in): 150 MB instead of 195 MB.
packages=python3,python3-venv,runc,busybox-static,conmon,mount,ca-certificates
mmdebstrap --quiet --variant=apt --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$packages" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm - | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' - "$tag" >/dev/null
echo "built $tag ($("$DOCKER" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
