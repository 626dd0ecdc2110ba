#!/usr/bin/env bash
# Builds helm (v3) from the Go module proxy, once, into a cache, and prints the bin directory.
# Idempotent: a cached binary of the wanted version is reused as it is.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.19.0}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
BIN="$CACHE_ROOT/helm-$HELM_VERSION/bin"

log() { printf '[helm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$BIN/helm" ] && "$BIN/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build helm"; exit 1; }
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local
# helm prints its version from these; `go install` alone would say v3.x-dirty/unknown.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
log "building helm $HELM_VERSION (the first build takes a few minutes)"
tmp=$(mktemp -d "$CACHE_ROOT/helm-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$tmp/helm" "$BIN/helm"
log "built $("$BIN/helm" version --short)"
echo "$BIN"
