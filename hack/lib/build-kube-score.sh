#!/usr/bin/env bash
# Builds kube-score (static checks of Kubernetes objects against reliability and security
# practice) from the Go module proxy, once, into a cache, and prints the bin directory.
# Idempotent: a cached binary of the wanted version is reused as it is.
set -euo pipefail

KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
BIN="$CACHE_ROOT/kube-score-$KUBE_SCORE_VERSION/bin"

log() { printf '[kube-score %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$BIN/kube-score" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build kube-score"; exit 1; }
mkdir -p "$CACHE_ROOT"
export CGO_ENABLED=0 GOTOOLCHAIN=local
log "building kube-score $KUBE_SCORE_VERSION"
tmp=$(mktemp -d "$CACHE_ROOT/kube-score-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
mkdir -p "$BIN"
mv "$tmp/kube-score" "$BIN/kube-score"
echo "$BIN"
