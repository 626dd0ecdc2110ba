#!/usr/bin/env bash
# Builds the local Kubernetes control plane from the Go module proxy, once, into a cache:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules
# (k8s.io/api, k8s.io/client-go, ...) with local paths. We generate a small tools module that
# requires k8s.io/kubernetes and replaces every staging module with its published v0.x twin.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
PREFIX="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
BIN="$PREFIX/bin"

log() { printf '[control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
# kwok's Logs CRD: the local pod executor names each pod's log files in a Logs object, which is
# how `kubectl logs` reaches them through kwok's node server (hack/local-cluster.sh).
KWOK_CRDS="$PREFIX/kwok-crds"
KWOK_LOGS_CRD="kwok.x-k8s.io_logs.yaml"
missing=()
for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ] && [ -f "$KWOK_CRDS/$KWOK_LOGS_CRD" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build the control plane"; exit 1; }
mkdir -p "$BIN" "$PREFIX/src"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

# Each binary is built in its own go invocation so progress is visible and a failure names its part.
build_k8s() {
  local mod="$PREFIX/src/k8s"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.mod" ]; then
    log "resolving k8s.io/kubernetes@$K8S_VERSION and its staging modules"
    local kmod staging_ver
    kmod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    staging_ver="v0.${K8S_VERSION#v1.}"
    {
      echo "module dbmigrate.local/k8s-tools"
      echo
      sed -n 's/^go \(.*\)$/go \1/p' "$kmod" | head -1
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_ver"'#p' "$kmod"
      echo ")"
    } > "$mod/go.mod.tmp"
    mv "$mod/go.mod.tmp" "$mod/go.mod"
  fi
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$b" ] && continue
    log "building $b (k8s $K8S_VERSION) — the first build takes several minutes"
    (cd "$mod" && go get "k8s.io/kubernetes/cmd/$b@$K8S_VERSION" >/dev/null 2>&1 || true
     go build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
    log "built $b"
  done
}

build_etcd() {
  [ -x "$BIN/etcd" ] && return
  local mod="$PREFIX/src/etcd"
  mkdir -p "$mod"
  log "building etcd $ETCD_VERSION"
  (cd "$mod"
   [ -f go.mod ] || go mod init dbmigrate.local/etcd-tools >/dev/null 2>&1
   go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
   go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "built etcd"
}

build_kwok() {
  [ -x "$BIN/kwok" ] && return
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local stages
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  mkdir -p "$PREFIX/kwok-stages"
  cp -r "$stages"/. "$PREFIX/kwok-stages/"
  chmod -R u+w "$PREFIX/kwok-stages"
  log "built kwok"
}

copy_kwok_crds() {
  [ -f "$KWOK_CRDS/$KWOK_LOGS_CRD" ] && return
  local dir
  dir=$(cd "$PREFIX/src" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$KWOK_CRDS"
  cp "$dir/kustomize/crd/bases/$KWOK_LOGS_CRD" "$KWOK_CRDS/"
  chmod u+w "$KWOK_CRDS/$KWOK_LOGS_CRD"
}

start=$(date +%s)
build_etcd
build_kwok
copy_kwok_crds
build_k8s
log "control plane ready in $(( $(date +%s) - start )) s: $BIN"
echo "$BIN"
