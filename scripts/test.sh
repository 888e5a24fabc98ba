#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (long tests included, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff (lint, 120 columns)"
.venv/bin/ruff check ltvl tests bench sweeps
# Two workers (LTVL_TEST_WORKERS): most of a Ray test is waiting on actors, so two share the
# 2-core machine well. Tests of one xdist_group (one shared cluster) stay on one worker.
exec .venv/bin/python -m pytest -n "${LTVL_TEST_WORKERS:-2}" --dist loadgroup "$@"
