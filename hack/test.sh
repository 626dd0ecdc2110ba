#!/usr/bin/env bash
# The one test command (`make test`, and so .ci/run): installs what is missing, runs the static
# checks, then the unit, integration and e2e tiers. Fixtures start PostgreSQL, Prometheus and the
# local Kubernetes control plane themselves and stop them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
hack/static-checks.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pytest tests "$@"
