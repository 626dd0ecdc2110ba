# shellcheck shell=bash
# Argo CD on the local cluster, sourced by hack/local-cluster.sh (`up --with-argocd`,
# `argocd-env`, `argocd-down`): the real application controller and repo server (built by
# hack/lib/build-argocd.sh), Redis from Debian and a Git daemon serving local repositories, all
# as processes on 127.0.0.1 with the cluster's process helpers (launch, stop, alive, wait_for).
#
# What a user's install has and this one has not: the API server, the UI, Dex and the
# ApplicationSet controller (nothing here needs them). So what the API server would do at its
# first start is done here: the `default` AppProject. The destination cluster is registered by a
# cluster Secret (the controller runs outside the cluster, so `https://kubernetes.default.svc`
# means nothing to it): Applications name it by `ARGOCD_DESTINATION` (see `argocd-env`).
#
# Expects from the sourcing script: STATE, LOGS, RUN, PKI, BIN, ROOT, API_PORT, and the functions
# launch, stop, alive, wait_for, free_ports, cert, kubeconfig, kctl, log, die.

ARGOCD_STATE=$STATE/argocd
ARGOCD_NS=argocd
ARGOCD_COMPONENTS=(redis git-daemon argocd-repo-server argocd-application-controller)
# How often the controller compares each Application with Git (Argo CD's default is 180 s plus
# up to 60 s of jitter, with a Git webhook to be quick; there is no webhook here).
ARGOCD_RESYNC_SECONDS=${ARGOCD_RESYNC_SECONDS:-10}

argocd_load_ports() {
  local any=0 c
  for c in "${ARGOCD_COMPONENTS[@]}"; do alive "$c" && any=1; done
  if [ "$any" = 1 ] && [ -f "$ARGOCD_STATE/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$ARGOCD_STATE/ports.env"
    return
  fi
  read -r REDIS_PORT GIT_PORT REPO_PORT REPO_METRICS_PORT CONTROLLER_METRICS_PORT < <(free_ports 5)
  printf 'REDIS_PORT=%s\nGIT_PORT=%s\nREPO_PORT=%s\nREPO_METRICS_PORT=%s\nCONTROLLER_METRICS_PORT=%s\n' \
    "$REDIS_PORT" "$GIT_PORT" "$REPO_PORT" "$REPO_METRICS_PORT" "$CONTROLLER_METRICS_PORT" \
    >"$ARGOCD_STATE/ports.env"
  log "Argo CD ports: redis $REDIS_PORT, git $GIT_PORT, repo server $REPO_PORT (metrics $REPO_METRICS_PORT), controller metrics $CONTROLLER_METRICS_PORT"
}

# Redis's password, made once, kept only in files of mode 0600 (never on a command line).
argocd_redis_password() {
  local f=$ARGOCD_STATE/redis-password
  [ -s "$f" ] || (umask 077 && openssl rand -hex 24 >"$f")
  cat "$f"
}

# --- the objects in the cluster --------------------------------------------------------------

argocd_cm_base() {
  cat <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: $ARGOCD_NS
  labels: {app.kubernetes.io/name: argocd-cm, app.kubernetes.io/part-of: argocd}
data:
  timeout.reconciliation: ${ARGOCD_RESYNC_SECONDS}s
  timeout.reconciliation.jitter: 0s
EOF
  local name
  for name in argocd-rbac-cm argocd-cmd-params-cm; do
    cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: $name
  namespace: $ARGOCD_NS
  labels: {app.kubernetes.io/name: $name, app.kubernetes.io/part-of: argocd}
EOF
  done
}

# The local cluster as an Argo CD cluster: its URL and Argo CD's own client certificate.
argocd_cluster_secret() {
  local config
  config=$(printf '{"tlsClientConfig":{"caData":"%s","certData":"%s","keyData":"%s"}}' \
    "$(base64 -w0 <"$PKI/ca.crt")" "$(base64 -w0 <"$PKI/argocd.crt")" "$(base64 -w0 <"$PKI/argocd.key")")
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: cluster-local
  namespace: $ARGOCD_NS
  labels: {argocd.argoproj.io/secret-type: cluster, app.kubernetes.io/part-of: argocd}
type: Opaque
stringData:
  name: local
  server: https://127.0.0.1:$API_PORT
  config: '$config'
EOF
}

argocd_default_project() {
  cat <<EOF
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: $ARGOCD_NS
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
EOF
}

argocd_install_objects() {
  local crds=$1 f
  local args=()
  for f in "$crds"/*.yaml; do args+=(-f "$f"); done
  # Server-side: the Application CRD is too large for client-side apply's annotation.
  kctl apply --server-side --force-conflicts "${args[@]}" >/dev/null
  wait_established "${args[@]}"
  kctl create namespace "$ARGOCD_NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null
  argocd_cm_base | kctl apply -f - >/dev/null
  # Our health check, installed exactly as docs/gitops.md tells users to.
  kctl -n "$ARGOCD_NS" patch configmap argocd-cm --type merge \
    --patch-file "$ROOT/hack/argocd/argocd-cm-patch.yaml" >/dev/null
  if ! kctl -n "$ARGOCD_NS" get secret argocd-secret >/dev/null 2>&1; then
    kctl -n "$ARGOCD_NS" create secret generic argocd-secret \
      --from-literal=server.secretkey="$(openssl rand -hex 32)" >/dev/null
    kctl -n "$ARGOCD_NS" label secret argocd-secret app.kubernetes.io/name=argocd-secret \
      app.kubernetes.io/part-of=argocd >/dev/null
  fi
  argocd_cluster_secret | kctl apply -f - >/dev/null
  argocd_default_project | kctl apply -f - >/dev/null
}

# --- the processes ---------------------------------------------------------------------------

argocd_start_redis() {
  mkdir -p "$ARGOCD_STATE/redis"
  (umask 077 && cat >"$ARGOCD_STATE/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
requirepass $(argocd_redis_password)
save ""
appendonly no
dir $ARGOCD_STATE/redis
EOF
  )
  launch redis "redis-server" redis-server "$ARGOCD_STATE/redis.conf"
}

argocd_redis_ready() {
  [ "$(REDISCLI_AUTH=$(argocd_redis_password) redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

argocd_start_git_daemon() {
  mkdir -p "$ARGOCD_STATE/git"
  # Read-only (no receive-pack): tests commit to the bare repositories on disk.
  launch git-daemon "git-daemon" "$(git --exec-path)/git-daemon" --export-all --reuseaddr \
    --informative-errors --listen=127.0.0.1 --port="$GIT_PORT" \
    --base-path="$ARGOCD_STATE/git" "$ARGOCD_STATE/git"
}

argocd_git_ready() { (: </dev/tcp/127.0.0.1/"$GIT_PORT") 2>/dev/null; }

# The environment of both Argo CD processes: Redis's password; the reconciliation timeout, which
# Argo CD's manifests pass to both from argocd-cm (the controller's resync period and the repo
# server's cache of what a branch points to); a HOME, TMPDIR and data paths of their own (the
# defaults are /app/config/... and /home/argocd, an image's layout).
argocd_env() {
  local home=$ARGOCD_STATE/home
  mkdir -p "$home" "$ARGOCD_STATE/tmp" "$ARGOCD_STATE/config/ssh" "$ARGOCD_STATE/config/tls" \
    "$ARGOCD_STATE/config/gpg/source" "$ARGOCD_STATE/config/gpg/keys"
  touch "$ARGOCD_STATE/config/ssh/ssh_known_hosts"
  printf '%s\n' env HOME="$home" TMPDIR="$ARGOCD_STATE/tmp" \
    REDIS_PASSWORD="$(argocd_redis_password)" ARGOCD_GPG_ENABLED=false \
    ARGOCD_RECONCILIATION_TIMEOUT="${ARGOCD_RESYNC_SECONDS}s" ARGOCD_RECONCILIATION_JITTER=0s \
    ARGOCD_SSH_DATA_PATH="$ARGOCD_STATE/config/ssh" ARGOCD_TLS_DATA_PATH="$ARGOCD_STATE/config/tls" \
    ARGOCD_GPG_DATA_PATH="$ARGOCD_STATE/config/gpg/source" GNUPGHOME="$ARGOCD_STATE/config/gpg/keys"
}

argocd_start_repo_server() {
  local envs
  mapfile -t envs < <(argocd_env)
  launch argocd-repo-server "$ABIN/argocd-repo-server" "${envs[@]}" "$ABIN/argocd-repo-server" \
    --address=127.0.0.1 --port="$REPO_PORT" --disable-tls \
    --metrics-address=127.0.0.1 --metrics-port="$REPO_METRICS_PORT" \
    --redis="127.0.0.1:$REDIS_PORT" --logformat=text
}

argocd_start_controller() {
  local envs
  mapfile -t envs < <(argocd_env)
  # --persist-resource-health: since v3.0 each resource's health lives only in Redis unless
  # asked (the API server reads it there); persisted, `kubectl get application` shows it.
  launch argocd-application-controller "$ABIN/argocd-application-controller" "${envs[@]}" \
    "$ABIN/argocd-application-controller" \
    --kubeconfig="$STATE/argocd.kubeconfig" --namespace="$ARGOCD_NS" \
    --repo-server="127.0.0.1:$REPO_PORT" --repo-server-plaintext \
    --redis="127.0.0.1:$REDIS_PORT" --metrics-port="$CONTROLLER_METRICS_PORT" \
    --status-processors=2 --operation-processors=2 \
    --persist-resource-health --logformat=text
}

argocd_http_ok() { curl -sf --max-time 2 "http://127.0.0.1:$1/healthz" >/dev/null; }

argocd_up() {
  local t0 c crds
  t0=$(date +%s)
  command -v redis-server >/dev/null || die "redis-server is required (Debian: redis-server; hack/bootstrap.sh)"
  command -v git >/dev/null || die "git is required"
  ABIN=$("$ROOT/hack/lib/build-argocd.sh")
  crds="$ABIN/../crds"
  mkdir -p "$ARGOCD_STATE"
  chmod 700 "$ARGOCD_STATE"
  # Argo CD's own client certificate: the API server's audit names it.
  cert argocd "/O=system:masters/CN=argocd-application-controller" "extendedKeyUsage=clientAuth"
  chmod 600 "$PKI/argocd.key"
  kubeconfig "$STATE/argocd.kubeconfig" argocd
  # A cluster restarted on new ports: the running Argo CD talks to the old one.
  if [ "$(cat "$ARGOCD_STATE/api-port" 2>/dev/null)" != "$API_PORT" ]; then
    for c in argocd-application-controller argocd-repo-server; do stop "$c"; done
  fi
  echo "$API_PORT" >"$ARGOCD_STATE/api-port"
  argocd_load_ports
  argocd_install_objects "$crds"
  if alive redis; then log "redis already running"; else argocd_start_redis; fi
  wait_for 30 redis argocd_redis_ready
  if alive git-daemon; then log "git-daemon already running"; else argocd_start_git_daemon; fi
  wait_for 30 "the git daemon" argocd_git_ready
  if alive argocd-repo-server; then log "argocd-repo-server already running"; else argocd_start_repo_server; fi
  wait_for 60 "the Argo CD repo server" argocd_http_ok "$REPO_METRICS_PORT"
  if alive argocd-application-controller; then
    log "argocd-application-controller already running"
  else
    argocd_start_controller
  fi
  wait_for 60 "the Argo CD application controller" argocd_http_ok "$CONTROLLER_METRICS_PORT"
  for c in "${ARGOCD_COMPONENTS[@]}"; do alive "$c" || die "$c exited (log: $LOGS/$c.log)"; done
  log "Argo CD up in $(($(date +%s) - t0)) s"
}

argocd_down() {
  local i
  for ((i = ${#ARGOCD_COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${ARGOCD_COMPONENTS[$i]}"; done
}

# What tests need to use it; exit 1 unless every component runs.
argocd_print_env() {
  local c
  for c in "${ARGOCD_COMPONENTS[@]}"; do alive "$c" || { log "$c: not running"; return 1; }; done
  # shellcheck disable=SC1091
  . "$ARGOCD_STATE/ports.env"
  echo "export ARGOCD_NAMESPACE=$ARGOCD_NS"
  echo "export ARGOCD_DESTINATION=https://127.0.0.1:$(cat "$ARGOCD_STATE/api-port")"
  echo "export ARGOCD_GIT_URL=git://127.0.0.1:$GIT_PORT"
  echo "export ARGOCD_GIT_ROOT=$ARGOCD_STATE/git"
  echo "export ARGOCD_LOGS=$LOGS"
}
