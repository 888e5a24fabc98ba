#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (long tests included, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh  # Chromium for the MLflow UI test (Debian packages; skipped where not installable)
echo "[test] ruff (lint, 120 columns)"
.venv/bin/ruff check ltvl tests bench sweeps
# Two workers (LTVL_TEST_WORKERS), one torch thread each: most of a Ray test is waiting on
# actors, so two share the 2-core machine well. Each test file runs whole on one worker, so
# module fixtures (a shared Ray or autoscaling cluster) are made once. Handing out the longest
# files first was tried twice (2026-11-24 and -25): it balances the two workers, but the Ray-heavy
# files then run at the same time and cost ~10% more in all (26 min 22 s against 25 min 44 s).
exec .venv/bin/python -m pytest -n "${LTVL_TEST_WORKERS:-2}" --dist loadfile "$@"
