#!/usr/bin/env bash
# Print the base image course images build FROM:
#   scripts/pick-base-image.sh [PUBLIC] [OFFLINE]
# PUBLIC (python:3.11-slim) when it is already here or a registry answers a pull of it;
# OFFLINE (mlops-course/base:bookworm, built from Debian packages by build-base-image.sh)
# when no registry answers, or when asked with OFFLINE=1. Without a Docker engine it prints
# PUBLIC (nothing is built then). A pull that cannot reach a registry fails in well under a
# second here; it is bounded at 120 s.
set -u
PUBLIC="${1:-python:3.11-slim}"
OFFLINE_IMAGE="${2:-mlops-course/base:bookworm}"
say() { printf 'base image: %s\n' "$*" >&2; }
if [ "${OFFLINE:-0}" = 1 ]; then say "$OFFLINE_IMAGE (OFFLINE=1)"; echo "$OFFLINE_IMAGE"; exit 0; fi
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then echo "$PUBLIC"; exit 0; fi
if docker image inspect "$PUBLIC" >/dev/null 2>&1; then say "$PUBLIC (already here)"; echo "$PUBLIC"; exit 0; fi
say "pulling $PUBLIC (about 50 MB; no registry means the offline base instead)..."
if timeout 120 docker pull -q "$PUBLIC" >/dev/null 2>&1; then
  say "$PUBLIC (pulled)"; echo "$PUBLIC"
else
  say "no registry answered: $OFFLINE_IMAGE, built from Debian packages (needs root and debootstrap)"
  echo "$OFFLINE_IMAGE"
fi
