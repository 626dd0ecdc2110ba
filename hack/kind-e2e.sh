#!/usr/bin/env bash
# The e2e suite against a kind cluster, for machines with Docker (the CI machines have none and
# use hack/local-cluster.sh instead). Same tests, same fixtures: DBMIGRATE_E2E_KUBECONFIG tells
# them to use this cluster as it is; tests that need the local pod executor (pods running on
# this host) skip themselves.
#
#   hack/kind-e2e.sh [pytest args...]
#   KIND_CLUSTER_NAME=dbmigrate-e2e KIND_NODE_IMAGE=kindest/node:vX DBMIGRATE_KEEP_CLUSTER=1
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${KIND_CLUSTER_NAME:-dbmigrate-e2e}
PY=${DBMIGRATE_PYTHON:-.venv/bin/python}
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done

created=0
if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind create cluster --name "$NAME" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  created=1
fi
kubeconfig=$(mktemp)
cleanup() {
  rm -f "$kubeconfig"
  if [ "$created" = 1 ] && [ "${DBMIGRATE_KEEP_CLUSTER:-0}" != 1 ]; then
    kind delete cluster --name "$NAME"
  fi
}
trap cleanup EXIT
kind get kubeconfig --name "$NAME" >"$kubeconfig"

# The operator's image, when the repository builds one, under the name the chart and the
# tests use locally.
if [ -f Dockerfile ]; then
  hack/build-image.sh localhost/dbmigrate:dev >/dev/null
  kind load docker-image localhost/dbmigrate:dev --name "$NAME"
fi

kubectl --kubeconfig "$kubeconfig" apply --server-side -f crds/
kubectl --kubeconfig "$kubeconfig" wait --for=condition=Established --timeout=60s -f crds/

DBMIGRATE_E2E_KUBECONFIG=$kubeconfig "$PY" -m pytest tests/e2e -p no:cacheprovider "$@"
