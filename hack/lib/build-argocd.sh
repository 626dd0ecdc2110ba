#!/usr/bin/env bash
# Builds Argo CD (the multi-call `argocd` binary: application controller, repo server, CLI, ...)
# from the Go module proxy, once, into a cache, and prints the bin directory. Beside bin/ it
# leaves crds/ with Argo CD's own CRDs (Application, AppProject) copied from the module source.
# Idempotent: a cached build of the wanted version is reused as it is.
#
# Like k8s.io/kubernetes, argo-cd cannot be `go install`ed: its go.mod pins the Kubernetes
# staging modules (and a few others) with `replace` lines, which a dependent module ignores. We
# generate a small tools module that requires argo-cd and repeats its (non-local) replace lines.
#
# Why v3.2.11 and not the newest v3 the proxy serves (checked with Go 1.26, GOTOOLCHAIN=local):
# - v3.6.x: "github.com/argoproj/argo-cd/v3@v3.6.1 requires go >= 1.27.0 (running go 1.26.8;
#   GOTOOLCHAIN=local)".
# - v3.3.0 .. v3.5.x: gitops-engine moved into the argo-cd repository as a nested module and
#   go.mod says `replace .../gitops-engine => ./gitops-engine`; a nested module is not part of
#   the module zip, and the required placeholder version is not served ("github.com/argoproj/
#   argo-cd/gitops-engine@v0.7.1-0.20250908182407-97ad5b59a627: reading .../@v/v0.7.1-0.2025090
#   8182407-97ad5b59a627.info: 403 Forbidden: This module version is not available"). For v3.3
#   the placeholder names a commit of the old standalone repository, whose source differs from
#   the embedded copy (about 2 000 diff lines): not the code that shipped.
# - v3.2.12: the proxy's copy does not compile ("controller/cache/info.go:51:23: undefined:
#   settings.ValidateExternalURL"); it is older than the commit the tag names now (moved tag).
# - v3.2.11 requires the standalone github.com/argoproj/gitops-engine at a served version: the
#   build below is exactly that release.
#
# Knobs: ARGOCD_VERSION; ARGOCD_BUILD_JOBS (go build -p; unset = Go's default, one per core —
# set 1 on a machine shared with running tests); the build always runs at nice 19 so that
# whatever else runs keeps its share of the cores.
set -euo pipefail

ARGOCD_VERSION=${ARGOCD_VERSION:-v3.2.11}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
PREFIX="$CACHE_ROOT/argocd-$ARGOCD_VERSION"
BIN="$PREFIX/bin"
CRDS="$PREFIX/crds"
MODULE=github.com/argoproj/argo-cd/v3

log() { printf '[argocd %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The names the multi-call binary answers to (cmd/main.go switches on its own name).
NAMES=(argocd-application-controller argocd-repo-server argocd-git-ask-pass)

ready() {
  [ -x "$BIN/argocd" ] || return 1
  local n
  for n in "${NAMES[@]}"; do [ -L "$BIN/$n" ] || return 1; done
  [ -f "$CRDS/application-crd.yaml" ] && [ -f "$CRDS/appproject-crd.yaml" ]
}

if ready; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build Argo CD"; exit 1; }
mkdir -p "$BIN" "$CRDS" "$PREFIX/src"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
[ -n "${ARGOCD_BUILD_JOBS:-}" ] && export GOFLAGS="$GOFLAGS -p=$ARGOCD_BUILD_JOBS"

start=$(date +%s)
mod="$PREFIX/src"
log "resolving $MODULE@$ARGOCD_VERSION"
info=$(cd "$mod" && go mod download -json "$MODULE@$ARGOCD_VERSION")
src=$(printf '%s' "$info" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || { log "could not download $MODULE@$ARGOCD_VERSION: $info"; exit 1; }

if [ ! -f "$mod/go.mod" ]; then
  {
    echo "module dbmigrate.local/argocd-tools"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$src/go.mod" | head -1
    echo
    echo "require $MODULE $ARGOCD_VERSION"
    echo
    echo "replace ("
    # Every `old => new version` line of argo-cd's replace blocks; local paths (=> ./x) and
    # comments are left out (a local path only means something inside argo-cd's own tree).
    awk '/^replace \($/ {inblock=1; next} inblock && /^\)$/ {inblock=0; next}
         inblock {print} /^replace [^(]/ {sub(/^replace /, ""); print}' "$src/go.mod" \
      | sed 's#//.*##' | grep '=>' | grep -v '=> *\.' | sed 's/^[[:space:]]*/\t/'
    echo ")"
  } >"$mod/go.mod.tmp"
  mv "$mod/go.mod.tmp" "$mod/go.mod"
fi

version=${ARGOCD_VERSION#v}
kubectl_version=$(sed -n 's#^\s*k8s.io/kubectl => k8s.io/kubectl \(v[^ ]*\)#\1#p' "$src/go.mod" | head -1)
pkg=$MODULE/common
ldflags="-s -w -X $pkg.version=$version -X $pkg.gitTag=$ARGOCD_VERSION -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.kubectlVersion=$kubectl_version"
log "building argocd $ARGOCD_VERSION (GOFLAGS=$GOFLAGS) — the first build takes a long while"
(cd "$mod" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$BIN/argocd.tmp" "$MODULE/cmd")
mv "$BIN/argocd.tmp" "$BIN/argocd"
for n in "${NAMES[@]}"; do ln -sfn argocd "$BIN/$n"; done

# Argo CD's own CRDs, as the release ships them.
for f in application-crd.yaml appproject-crd.yaml; do
  install -m 0644 "$src/manifests/crds/$f" "$CRDS/$f"
done
log "argocd $ARGOCD_VERSION ready in $(( $(date +%s) - start )) s: $BIN"
echo "$BIN"
