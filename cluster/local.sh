#!/usr/bin/env bash
# A real two-node Ray cluster (head + a second node with its own resources) and an MLflow
# server on this machine, every port bound to 127.0.0.1 and the job API behind Ray's token auth.
#
#   bash cluster/local.sh up     [--head-cpus 1] [--worker-cpus 1] [--no-mlflow] [--dir DIR]
#   bash cluster/local.sh up --autoscale [--max-workers 2] [--idle-timeout 20] [--node-types cluster/aws.yaml]
#                                            # a head whose autoscaler launches worker nodes on demand
#   eval "$(bash cluster/local.sh env)"      # RAY_ADDRESS, RAY_AUTH_MODE, MLFLOW_TRACKING_URI
#   ray job submit --working-dir . -- python sweeps/rewind_grid.py
#   bash cluster/local.sh status [--json]    # services, addresses, every listening port
#   bash cluster/local.sh preempt NODE_ID    # (autoscaling) take a worker away, as a cloud reclaims spot
#   bash cluster/local.sh down               # stops only what `up` started (recorded PIDs)
#
# State (PIDs, ports, logs, MLflow's sqlite + artifacts) lives in $LTVL_HOME/local-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec .venv/bin/ltvl cluster "$@"
