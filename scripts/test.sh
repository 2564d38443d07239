#!/usr/bin/env bash
# The project's test command: lint, format check, types, layering contracts, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check"; ruff check src tests benchmarks
echo "== ruff format --check"; ruff format --check src tests benchmarks
echo "== mypy (strict) on src/"; mypy
echo "== import-linter contracts"; lint-imports
echo "== pytest (3 processes: most tests wait on sockets and subprocesses)"
pytest -q -n 3 "$@"
