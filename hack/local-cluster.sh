#!/usr/bin/env bash
# A local Kubernetes control plane without Docker: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok as processes on 127.0.0.1 (TLS everywhere, RBAC), one kwok node, and
# the local pod executor (dbmigrate_dev.kubelet) that really runs the pods of chosen images.
#
#   hack/local-cluster.sh up       start what is not running (idempotent); prints the kubeconfig
#   hack/local-cluster.sh up --with-argocd
#                                  the same, and Argo CD on it (hack/lib/local-argocd.sh)
#   hack/local-cluster.sh argocd-env   print Argo CD's `export` lines; exit 1 unless it runs
#   hack/local-cluster.sh argocd-down  stop Argo CD's processes (its objects stay)
#   hack/local-cluster.sh down     stop everything and forget the cluster's data (certs are kept)
#   hack/local-cluster.sh status   exit 0 iff the API server answers
#   hack/local-cluster.sh env      print `export KUBECONFIG=...` and a PATH with our kubectl first
#   hack/local-cluster.sh stop C   stop one component (an outage, for the fault matrix); `up`
#                                  starts it again
#
# The binaries come from hack/lib/build-control-plane.sh (built once, cached). State (certs, etcd
# data, logs, pids, kubeconfigs) lives in $DBMIGRATE_CLUSTER_DIR (default
# ~/.cache/dbmigrate/cluster). Extra executor images: DBMIGRATE_EXECUTOR_IMAGES='img=host,...'.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${DBMIGRATE_CLUSTER_DIR:-$HOME/.cache/dbmigrate/cluster}
PY=${DBMIGRATE_PYTHON:-$ROOT/.venv/bin/python}
PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
NODE_NAME=kwok-node-0
# Start order; `down` goes the other way.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok executor)

# shellcheck source=hack/lib/local-argocd.sh
. "$ROOT/hack/lib/local-argocd.sh"

log() { printf '[local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- processes -------------------------------------------------------------------------------

pid_of() { # prints the component's pid iff that process is alive and still ours
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && running "$pid" || return 1
  # The pid must still belong to the program we started (pids get reused).
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(cat "$RUN/$1.match")" || return 1
  echo "$pid"
}

alive() { pid_of "$1" >/dev/null; }

# A process that exited but was not reaped yet (a zombie: our parent is gone) is not running.
running() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -c1)" != Z ]; }

launch() { # launch NAME MATCH CMD... : in its own session, logs and pid in the state dir
  local name=$1 match=$2
  shift 2
  mkdir -p "$LOGS" "$RUN"
  printf '%s' "$match" >"$RUN/$name.match"
  # The previous run's log stays beside the new one (why did it stop?).
  [ -f "$LOGS/$name.log" ] && mv "$LOGS/$name.log" "$LOGS/$name.log.prev"
  # setsid: a Ctrl-C in the shell (or pytest) that ran `up` must not stop the cluster.
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  log "started $name (pid $!, log $LOGS/$name.log)"
}

stop() {
  local name=$1 pid i
  pid=$(pid_of "$name") || { rm -f "$RUN/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "$name did not stop in 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
  log "stopped $name"
}

wait_for() { # wait_for SECONDS WHAT CMD... : retry CMD until it succeeds
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "timed out after ${secs}s waiting for $what (logs: $LOGS)"
    fi
    sleep 0.2
  done
}

# --- certificates ----------------------------------------------------------------------------

# cert NAME SUBJECT EXT : an EC key and a certificate signed by our CA, made once.
cert() {
  local name=$1 subj=$2 ext=$3
  [ -f "$PKI/$name.crt" ] && return
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -subj "$subj" -addext "$ext" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -copy_extensions copyall -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    log "creating certificates in $PKI"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$PKI/ca.key" -subj "/CN=dbmigrate-local-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  # etcd's certificate (no extendedKeyUsage: any) serves clients and peers and is its own peer client.
  cert etcd "/CN=etcd" "subjectAltName=IP:127.0.0.1,DNS:localhost"
  cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" "extendedKeyUsage=clientAuth"
  cert admin "/O=system:masters/CN=kubernetes-admin" "extendedKeyUsage=clientAuth"
  cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  # kwok writes the status of nodes and pods and deletes pods: cluster-admin, but its own name.
  cert kwok "/O=system:masters/CN=kwok-controller" "extendedKeyUsage=clientAuth"
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
}

# kubeconfig FILE CERT : a kubeconfig for the client certificate CERT, certificates embedded so
# that the file can be copied elsewhere.
kubeconfig() {
  local file=$1 who=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  chmod 600 "$tmp"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dbmigrate-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $who
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$who.crt")
    client-key-data: $(base64 -w0 <"$PKI/$who.key")
contexts:
- name: dbmigrate-local
  context:
    cluster: dbmigrate-local
    user: $who
current-context: dbmigrate-local
EOF
  mv "$tmp" "$file"
}

# --- ports -----------------------------------------------------------------------------------

free_ports() { # N free loopback ports, chosen by the kernel
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

load_ports() {
  local any=0 c
  for c in "${COMPONENTS[@]}"; do alive "$c" && any=1; done
  if [ "$any" = 1 ] && [ -f "$STATE/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$STATE/ports.env"
    return
  fi
  # Nothing runs: a fresh cluster on fresh ports (old etcd data would name old peer URLs).
  rm -rf "$STATE/etcd" "$STATE/executor"
  read -r ETCD_PORT ETCD_PEER_PORT API_PORT KWOK_PORT < <(free_ports 4)
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPI_PORT=%s\nKWOK_PORT=%s\n' \
    "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$KWOK_PORT" >"$STATE/ports.env"
  log "ports: etcd $ETCD_PORT/$ETCD_PEER_PORT, kube-apiserver $API_PORT, kwok $KWOK_PORT"
}

# --- the components --------------------------------------------------------------------------

start_etcd() {
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  local url=https://127.0.0.1:$ETCD_PORT peer=https://127.0.0.1:$ETCD_PEER_PORT
  launch etcd "$BIN/etcd" "$BIN/etcd" --name=node0 --data-dir="$STATE/etcd" \
    --listen-client-urls="$url" --advertise-client-urls="$url" \
    --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
    --initial-cluster="node0=$peer" --initial-cluster-state=new \
    --cert-file="$PKI/etcd.crt" --key-file="$PKI/etcd.key" \
    --trusted-ca-file="$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file="$PKI/etcd.crt" --peer-key-file="$PKI/etcd.key" \
    --peer-trusted-ca-file="$PKI/ca.crt" --peer-client-cert-auth \
    --listen-metrics-urls="" \
    --unsafe-no-fsync --auto-compaction-retention=1 --quota-backend-bytes=2147483648 \
    --log-level=warn
}

etcd_healthy() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" "https://127.0.0.1:$ETCD_PORT/health" | grep -q true
}

start_apiserver() {
  launch kube-apiserver "$BIN/kube-apiserver" "$BIN/kube-apiserver" \
    --etcd-servers="https://127.0.0.1:$ETCD_PORT" --etcd-cafile="$PKI/ca.crt" \
    --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
    --authorization-mode=RBAC --allow-privileged=true --profiling=false \
    --enable-priority-and-fairness=false --event-ttl=1h
}

api_ready() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" | grep -q ok
}

start_controller_manager() {
  kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
  launch kube-controller-manager "$BIN/kube-controller-manager" "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --kube-api-qps=200 --kube-api-burst=400 --profiling=false
}

start_scheduler() {
  kubeconfig "$STATE/scheduler.kubeconfig" scheduler
  launch kube-scheduler "$BIN/kube-scheduler" "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false
}

# kwok loads no stages by default: ours are upstream's "fast" set, with the pod stages told to
# leave the executor's images alone. The image list comes from the executor itself.
kwok_stages() {
  local images quoted="" img f
  images=$("$PY" -m dbmigrate_dev.kubelet --list-images)
  for img in $images; do quoted+="${quoted:+, }\"$img\""; done
  for f in "$ROOT"/hack/kwok/*.yaml; do
    printf -- '---\n'
    sed "s|\"%EXECUTOR_IMAGES%\"|$quoted|" "$f"
  done
}

start_kwok() {
  kubeconfig "$STATE/kwok.kubeconfig" kwok
  local stages=$STATE/kwok-stages.yaml
  kwok_stages >"$stages"
  # The executor's pods' logs: it names their files in kwok Logs objects (CRD from the build),
  # and kwok's node server serves them to the API server (`kubectl logs`).
  kctl apply -f "$(dirname "$BIN")/kwok-crds/kwok.x-k8s.io_logs.yaml" >/dev/null
  wait_established crd/logs.kwok.x-k8s.io
  # HOME: kwok also reads ~/.kwok/kwok.yaml if it exists; it must see only our configuration.
  mkdir -p "$STATE/kwok-home"
  launch kwok "$BIN/kwok" env HOME="$STATE/kwok-home" "$BIN/kwok" \
    --kubeconfig="$STATE/kwok.kubeconfig" --config="$stages" --enable-crds=Logs \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --node-port="$KWOK_PORT" --server-address="127.0.0.1:$KWOK_PORT" \
    --node-lease-duration-seconds=40
}

start_executor() {
  launch executor "dbmigrate_dev.kubelet" env DBMIGRATE_CLUSTER_DIR="$STATE" \
    "$PY" -m dbmigrate_dev.kubelet --kubeconfig="$STATE/kubeconfig" \
    --state-dir="$STATE/executor" --docker-env="$ROOT/hack/lib/docker-engine.sh env"
}

executor_ready() { grep -q "executor ready" "$LOGS/executor.log"; }

kctl() { "$BIN/kubectl" --kubeconfig="$STATE/kubeconfig" --request-timeout=10s "$@"; }

# `kubectl wait --for=condition=Established` on CRDs, asked again while it fails: on a CRD the
# API server has just created, `.status.conditions` can still be null, and kubectl gives up at
# once with ".status.conditions accessor error" instead of waiting (seen in a CI run).
wait_established() {
  local deadline=$((SECONDS + 60))
  until kctl wait --for=condition=Established --timeout=60s "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      kctl wait --for=condition=Established --timeout=1s "$@" >/dev/null
      return
    fi
    sleep 0.5
  done
}

node_address() {
  local address
  address=$(kctl get node "$NODE_NAME" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
  [ -n "$address" ] && echo "$address"
}

node_manifest() {
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
EOF
}

# --- commands --------------------------------------------------------------------------------

cmd_up() {
  local t0 c
  t0=$(date +%s%N)
  BIN=$("$ROOT/hack/lib/build-control-plane.sh")
  [ -x "$PY" ] || die "no Python at $PY (run hack/bootstrap.sh, or set DBMIGRATE_PYTHON)"
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  mkdir -p "$STATE" "$LOGS" "$RUN"
  chmod 700 "$STATE"
  echo "$BIN" >"$STATE/bin-dir"
  make_pki
  load_ports
  kubeconfig "$STATE/kubeconfig" admin

  if alive etcd; then log "etcd already running"; else start_etcd; fi
  wait_for 30 etcd etcd_healthy
  if alive kube-apiserver; then log "kube-apiserver already running"; else start_apiserver; fi
  wait_for 60 "kube-apiserver /readyz" api_ready
  log "kube-apiserver ready on https://127.0.0.1:$API_PORT"
  if alive kube-controller-manager; then log "kube-controller-manager already running"; else start_controller_manager; fi
  if alive kube-scheduler; then log "kube-scheduler already running"; else start_scheduler; fi
  # A kwok started by an earlier version of this script (without pod logs, or with other
  # stages) is started again.
  if alive kwok && ! tr '\0' ' ' <"/proc/$(pid_of kwok)/cmdline" | grep -q -- --enable-crds=Logs; then
    log "kwok runs without --enable-crds=Logs (no pod logs): restarting it"
    stop kwok
  elif alive kwok && ! kwok_stages | cmp -s - "$STATE/kwok-stages.yaml"; then
    log "kwok runs with other stages than hack/kwok/: restarting it"
    stop kwok
  fi
  if alive kwok; then log "kwok already running"; else start_kwok; fi
  node_manifest | kctl apply -f - >/dev/null
  wait_for 60 "node $NODE_NAME Ready" kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  # `kubectl logs` reaches a pod through its node's address. A node that lost it (to the stages
  # of an earlier version of this script) is marked Unknown, and kwok initializes it again.
  if [ -z "$(node_address)" ]; then
    log "node $NODE_NAME has no address: kwok initializes it again"
    kctl patch node "$NODE_NAME" --subresource=status \
      -p '{"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}' >/dev/null
    wait_for 60 "node $NODE_NAME to have an address" node_address
  fi
  if alive executor; then log "executor already running"; else start_executor; fi
  wait_for 30 "the local pod executor" executor_ready
  wait_for 60 "the default ServiceAccount" kctl get serviceaccount default -n default
  for c in "${COMPONENTS[@]}"; do alive "$c" || die "$c exited (log: $LOGS/$c.log)"; done
  [ "${1:-}" = --with-argocd ] && argocd_up
  local ms=$((($(date +%s%N) - t0) / 1000000))
  log "cluster up in $((ms / 1000)).$((ms % 1000 / 100)) s"
  echo "export KUBECONFIG=$STATE/kubeconfig"
}

cmd_down() {
  local i
  argocd_down
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[$i]}"; done
  # The cluster's data goes; certificates stay (they make the next `up` faster).
  rm -rf "$STATE/etcd" "$STATE/executor" "$STATE/ports.env" "$STATE"/*.kubeconfig "$STATE/kubeconfig"
  log "down"
}

cmd_status() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then log "$c: running (pid $pid)"; else log "$c: not running"; fi
  done
  for c in "${ARGOCD_COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then log "$c: running (pid $pid)"; fi
  done
  if [ ! -f "$STATE/ports.env" ] || [ ! -f "$STATE/kubeconfig" ]; then
    log "API server: no cluster"
    return 1
  fi
  # shellcheck disable=SC1091
  . "$STATE/ports.env"
  if api_ready; then
    log "API server: ready at https://127.0.0.1:$API_PORT"
    echo "export KUBECONFIG=$STATE/kubeconfig"
    return 0
  fi
  log "API server: not answering"
  return 1
}

cmd_env() {
  [ -f "$STATE/kubeconfig" ] || die "no cluster: run $0 up"
  echo "export KUBECONFIG=$STATE/kubeconfig"
  [ -f "$STATE/bin-dir" ] && echo "export PATH=$(cat "$STATE/bin-dir"):\$PATH"
  return 0
}

cmd_stop_one() {
  local c
  for c in "${COMPONENTS[@]}" "${ARGOCD_COMPONENTS[@]}"; do
    if [ "$c" = "${1:-}" ]; then
      stop "$c"
      return 0
    fi
  done
  die "no component ${1:-} (one of: ${COMPONENTS[*]})"
}

case "${1:-}" in
  up)
    case "${2:-}" in
      "" | --with-argocd) cmd_up "${2:-}" ;;
      *) echo "usage: $0 up [--with-argocd]" >&2; exit 2 ;;
    esac
    ;;
  down) cmd_down ;;
  argocd-env) argocd_print_env ;;
  argocd-down) argocd_down ;;
  stop) cmd_stop_one "${2:-}" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 up [--with-argocd]|down|status|env|stop COMPONENT|argocd-env|argocd-down" >&2
    exit 2
    ;;
esac
