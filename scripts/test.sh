#!/usr/bin/env bash
# Set everything up, then run the whole test suite (long tests included, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
