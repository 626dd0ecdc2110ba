#!/usr/bin/env bash
# `make demo`: installs what is missing, then tells the whole story on kind (when a Docker engine
# answers) or the local control plane (hack/demo.py). Arguments go to the demo, e.g.
# `hack/demo.sh --rows 200000 --no-wait` or `hack/demo.sh --cluster local`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python hack/demo.py "$@"
