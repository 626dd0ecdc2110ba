#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (Apache-2.0; its S3 gateway is the tests' and the benchmark's
# S3-compatible object store) from the Go module proxy, once, into a cache, and prints the bin
# directory. Idempotent: a cached binary of the wanted version is reused as it is.
#
# SeaweedFS tags its releases without a `v` (3.xx), so the module proxy knows it only by
# pseudo-versions of its commits: SEAWEEDFS_VERSION is one of those. Its go.mod has a `replace`
# directive, which `go install pkg@version` refuses: as for the control plane, a small tools
# module requires it and repeats its replace directives.
set -euo pipefail

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
PREFIX="$CACHE_ROOT/seaweedfs-$SEAWEEDFS_VERSION"
BIN="$PREFIX/bin"
MODULE=github.com/seaweedfs/seaweedfs

log() { printf '[seaweedfs %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$BIN/weed" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build SeaweedFS"; exit 1; }
mkdir -p "$BIN" "$PREFIX/src"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
mod="$PREFIX/src"
if [ ! -f "$mod/go.mod" ]; then
  log "resolving $MODULE@$SEAWEEDFS_VERSION"
  gomod=$(cd "$mod" && go mod download -json "$MODULE@$SEAWEEDFS_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module dbmigrate.local/seaweedfs-tools"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$gomod" | head -1
    echo
    echo "require $MODULE $SEAWEEDFS_VERSION"
    echo
    # single-line replace directives (to module versions, never local paths)
    sed -n 's/^replace \(.* => [^.\/].*\)$/replace \1/p' "$gomod"
  } > "$mod/go.mod.tmp"
  mv "$mod/go.mod.tmp" "$mod/go.mod"
fi
log "building weed $SEAWEEDFS_VERSION (the first build takes several minutes)"
(cd "$mod" && go get "$MODULE/weed@$SEAWEEDFS_VERSION" >/dev/null 2>&1 || true
 go build -trimpath -ldflags "-s -w" -o "$BIN/weed.tmp" "$MODULE/weed")
mv "$BIN/weed.tmp" "$BIN/weed"
log "built $("$BIN/weed" version 2>/dev/null | head -1)"
echo "$BIN"
