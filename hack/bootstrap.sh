#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh Debian machine, idempotently:
# Debian packages (PostgreSQL 15 with its client tools, Prometheus, openssl, Redis, git), a
# virtualenv with the project and its test/dev extras, and the Go-built tools (cached): the local
# Kubernetes control plane, helm, kube-score, SeaweedFS and Argo CD.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-contrib)
# pg_dump / pg_restore of the backup worker (postgresql-15 pulls them in; said for clarity)
[ -x /usr/lib/postgresql/15/bin/pg_dump ] || need_apt+=(postgresql-client-15)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -x /usr/sbin/pgbouncer ] || need_apt+=(pgbouncer)  # the session-pooling checks (tests/security)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)  # Argo CD's cache (tests/e2e/test_argocd.py)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)  # a real terminal for `kubectl dbmigrate get --watch` (tests/e2e/test_plugin.py)
command -v git >/dev/null 2>&1 || need_apt+=(git)  # Argo CD's repo server and the test's Git daemon
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own services are not wanted: the tests start private instances.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml requirements-dev.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # Exactly the locked versions, each file checked against its hash (hack/lock.sh), then the
  # project itself on top without touching them.
  log "installing the locked test/dev dependencies and the project into .venv"
  .venv/bin/pip install -q --require-hashes -r requirements-dev.lock
  .venv/bin/pip install -q --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The development tooling (operator/dbmigrate_dev) is not a package of the wheel: the editable
# install's .pth file, which puts operator/ on sys.path, is what makes it importable.
.venv/bin/python -c 'import dbmigrate_dev' 2>/dev/null \
  || { log "ERROR: dbmigrate_dev is not importable from .venv (is operator/ on its sys.path?)"; exit 1; }

if [ "${DBMIGRATE_SKIP_CONTROL_PLANE:-0}" != 1 ]; then
  hack/lib/build-control-plane.sh >/dev/null
fi
hack/lib/build-helm.sh >/dev/null  # helm for the chart tests (cached)
hack/lib/build-kube-score.sh >/dev/null  # kube-score for the chart tests (cached)
# SeaweedFS, the S3-compatible store of the backup tests and benchmark (cached; the first build
# takes about 8 minutes on 2 cores)
hack/lib/build-seaweedfs.sh >/dev/null
# Argo CD's application controller and repo server, for the GitOps e2e tests (cached; the first
# build took 5 min 14 s on 2 cores shared with other work, with empty Go caches)
hack/lib/build-argocd.sh >/dev/null
log "ready"
