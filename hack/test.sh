#!/usr/bin/env bash
# The one test command (`make test`, and so .ci/run): installs what is missing, runs the static
# checks and the dependency audit, then the unit, integration and e2e tiers. Fixtures start
# PostgreSQL, Prometheus and the local Kubernetes control plane themselves and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
hack/static-checks.sh
.venv/bin/python -m dbmigrate_dev.audit  # known vulnerabilities in the locked dependencies
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pytest tests "$@"
