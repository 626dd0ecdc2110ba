#!/usr/bin/env bash
# Prints the directory of a kind binary: the one on PATH, or one built from the Go module proxy
# once into a cache. (kind itself needs a Docker engine and its node image from a registry.)
set -euo pipefail

KIND_VERSION=${KIND_VERSION:-v0.30.0}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
BIN="$CACHE_ROOT/kind-$KIND_VERSION/bin"

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if command -v kind >/dev/null; then
  dirname "$(command -v kind)"
  exit 0
fi
if [ -x "$BIN/kind" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build kind"; exit 1; }
mkdir -p "$BIN"
log "building kind $KIND_VERSION"
tmp=$(mktemp -d "$CACHE_ROOT/kind-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kind@$KIND_VERSION"
mv "$tmp/kind" "$BIN/kind"
log "built $("$BIN/kind" version)"
echo "$BIN"
