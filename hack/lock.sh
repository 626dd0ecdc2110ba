#!/usr/bin/env bash
# The locked dependency sets, with every file's hash, from pyproject.toml (uv pip compile):
#   requirements.lock        the runtime dependencies: what the image installs
#   requirements-build.lock  the build backend the image builds our wheel with
#   requirements-dev.lock    runtime + test + dev extras: what hack/bootstrap.sh installs
# A rebuild of the same commit gets the same packages (pglast in particular: its token stream
# feeds the history checksums). Run after changing dependencies in pyproject.toml; a test
# (tests/unit/test_locks.py) fails when a lock no longer satisfies pyproject.toml.
# Usage: hack/lock.sh [--upgrade]   (without --upgrade, pinned versions are kept where they fit)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
common=(--universal --python-version 3.11 --generate-hashes --quiet
  --custom-compile-command "hack/lock.sh" "$@")
"$UV" pip compile pyproject.toml "${common[@]}" -o requirements.lock
"$UV" pip compile pyproject.toml --extra test --extra dev "${common[@]}" -o requirements-dev.lock
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  | "$UV" pip compile - "${common[@]}" -o requirements-build.lock
