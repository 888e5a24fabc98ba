#!/usr/bin/env bash
# Set everything up, then run the main job: the rewind-grid sweep (sweeps/configs/rewind_grid.yaml)
# on a local Ray with lineage in the local MLflow store. Extra arguments go to the sweep,
# e.g. --set params.steps=100, --resume, --dry-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python sweeps/rewind_grid.py "$@"
