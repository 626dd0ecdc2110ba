#!/usr/bin/env bash
# ruff (lint + format), mypy (strict on core/ and api/), import-linter (layering).
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
$V/ruff check operator tests hack
$V/ruff format --check operator tests hack
$V/mypy
$V/lint-imports
