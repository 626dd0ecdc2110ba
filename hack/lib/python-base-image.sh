#!/usr/bin/env bash
# Makes the Dockerfile's base image available to the local Docker engine and prints its name.
#
# The Dockerfile builds FROM python:<version>-slim-bookworm@<digest>. When that image is present or can be
# pulled, it is used as it is. When the engine cannot reach a registry (an offline or air-gapped
# machine), this builds a stand-in from Debian bookworm's own packages with debootstrap, laid out
# like the official image (interpreter, pip and site-packages under /usr/local, CPython 3.11 —
# Debian's, not the official image's patch release), imports it and prints its name, to be passed
# as `--build-arg BASE_IMAGE=…`. The stand-in's root filesystem is cached as a tarball.
#
#   hack/lib/python-base-image.sh            # prints the image name to build FROM
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[base-image] %s\n' "$*" >&2; }

PYTHON_VERSION=$(sed -n 's/^ARG PYTHON_VERSION=//p' Dockerfile)
BASE_DIGEST=$(sed -n 's/^ARG BASE_DIGEST=//p' Dockerfile)
OFFICIAL="python:${PYTHON_VERSION}-slim-bookworm@${BASE_DIGEST}"
STAND_IN="localhost/dbmigrate-python-base:3.11-bookworm"
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
TARBALL="$CACHE_ROOT/python-base-bookworm.tar"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if "${DOCKER:-docker}" image inspect "$OFFICIAL" >/dev/null 2>&1; then
  echo "$OFFICIAL"
  exit 0
fi
if timeout 120 "${DOCKER:-docker}" pull -q "$OFFICIAL" >/dev/null 2>&1; then
  echo "$OFFICIAL"
  exit 0
fi
if "${DOCKER:-docker}" image inspect "$STAND_IN" >/dev/null 2>&1; then
  echo "$STAND_IN"
  exit 0
fi
log "$OFFICIAL cannot be pulled: building a stand-in from Debian bookworm packages"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -s "$TARBALL" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      debootstrap >/dev/null
  fi
  mkdir -p "$CACHE_ROOT"
  root=$(mktemp -d "$CACHE_ROOT/python-base.XXXXXX")
  trap '$SUDO rm -rf "$root"' EXIT
  log "debootstrap bookworm (minbase + python3) into $root"
  $SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # The official image's layout: `python` and `pip` in /usr/local/bin, packages installed into
  # /usr/local/lib/python3.11/site-packages (a virtual environment rooted at /usr/local, so pip
  # never touches Debian's externally managed /usr).
  $SUDO chroot "$root" /usr/bin/python3 -m venv /usr/local
  $SUDO chroot "$root" /usr/local/bin/python -m pip --version >/dev/null
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  $SUDO tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  $SUDO chown "$(id -u):$(id -g)" "$TARBALL.tmp"
  mv "$TARBALL.tmp" "$TARBALL"
fi
"${DOCKER:-docker}" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$TARBALL" "$STAND_IN" >/dev/null
log "imported $STAND_IN"
echo "$STAND_IN"
