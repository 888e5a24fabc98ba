"""``ltvl cluster``: a real local Ray cluster (two nodes, or autoscaling) and an MLflow server, on 127.0.0.1 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ltvl.cli.common import console, err, group
from ltvl.util.errors import LtvlError

cluster_app = group("A real two-node Ray cluster + MLflow server on this machine (127.0.0.1 only).")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")



ClusterDir = Annotated[
    Optional[Path], typer.Option("--dir", help="state directory (default: $LTVL_HOME/local-cluster)")
]


@cluster_app.command("up")
def cluster_up(
    directory: ClusterDir = None,
    head_cpus: Annotated[float, typer.Option(help="CPUs the head node offers")] = 1,
    worker_cpus: Annotated[float, typer.Option(help="CPUs the second node offers")] = 1,
    mlflow: Annotated[bool, typer.Option(help="also start an MLflow server (sqlite + served artifacts)")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each service")] = 180,
    autoscale: Annotated[
        bool, typer.Option(help="no second node: the head's autoscaler launches worker nodes (real raylets) on demand")
    ] = False,
    node_types: Annotated[
        Optional[Path], typer.Option(help="with --autoscale: take the node types from this `ray up` config")
    ] = None,
    max_workers: Annotated[int, typer.Option(help="with --autoscale: most worker nodes at once")] = 2,
    idle_timeout: Annotated[float, typer.Option(help="with --autoscale: seconds before an idle worker goes")] = 20,
) -> None:
    """Start a Ray head, a second Ray node (or an autoscaler) and an MLflow server, all bound to 127.0.0.1."""
    from ltvl.cluster.autoscale import DEFAULT_NODE_TYPES, AutoscaleSpec
    from ltvl.cluster.local import default_dir, up

    spec = AutoscaleSpec(node_types or DEFAULT_NODE_TYPES, max_workers, idle_timeout) if autoscale else None
    if not autoscale and (node_types is not None or max_workers != 2 or idle_timeout != 20):
        raise LtvlError("--node-types, --max-workers and --idle-timeout need --autoscale", where="ltvl cluster up",
                        fix="add --autoscale")
    state = up(directory or default_dir(), head_cpus, worker_cpus, mlflow, timeout_s=timeout, autoscale=spec)
    scaling = f"; autoscaling up to {max_workers} worker nodes ({spec.node_types_file})" if spec else ""
    console.print(
        f"Ray head {state.ray_address}, nodes {', '.join(state.nodes)}{scaling}; dashboard + job API "
        f"{state.dashboard}" + (f"; MLflow {state.tracking_uri}" if state.tracking_uri else "")
    )
    console.print(
        'Use it from this shell:\n  eval "$(ltvl cluster env)"\n'
        "  ray job submit --working-dir . -- python sweeps/rewind_grid.py\nStop it:  ltvl cluster down"
    )


@cluster_app.command("down")
def cluster_down(directory: ClusterDir = None) -> None:
    """Stop exactly the processes `up` started (by recorded PID); other Ray clusters are left alone."""
    from ltvl.cluster.local import default_dir, down

    stopped = down(directory or default_dir())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cluster_app.command("preempt")
def cluster_preempt(
    node_id: Annotated[str, typer.Argument(help="the worker's Ray node id (ltvl cluster status lists them)")],
    directory: ClusterDir = None,
) -> None:
    """Take a worker node of an autoscaling local cluster away, as a cloud reclaims a spot instance."""
    from ltvl.cluster.local import default_dir, preempt

    record = preempt(directory or default_dir(), node_id)
    console.print(f"preempted {node_id} ({record['node_type']}); the autoscaler replaces it if work is waiting")


@cluster_app.command("announce")
def cluster_announce(
    config: Annotated[Path, typer.Argument(help="`ray up` config (a head has ~/ray_bootstrap_config.yaml)")],
    address: Annotated[str, typer.Option(help="the GCS address")] = "127.0.0.1:6379",
) -> None:
    """Record the cluster's node types in its GCS, so sweeps size themselves by what the autoscaler
    can launch rather than by the nodes that happen to be up (cloud heads run this at start)."""
    import yaml

    from ltvl.ray.capacity import announce_capacity, capacity_from_config

    cap = capacity_from_config(yaml.safe_load(config.read_text()))
    announce_capacity(address, cap)
    console.print(f"recorded {cap.describe()}")


@cluster_app.command("status")
def cluster_status(
    directory: ClusterDir = None, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
) -> None:
    """Which recorded services run, their addresses, and every port they listen on (a port on a
    public address is flagged and exits 1)."""
    from ltvl.cluster.local import default_dir, status

    st = status(directory or default_dir())
    if as_json:
        console.print_json(json.dumps(st))
    elif not st["running"] and "services" not in st:
        console.print(f"no local cluster recorded in {st['dir']}")
    else:
        for name, alive in st["services"].items():
            console.print(f"{name:<14} {'running' if alive else '[red]stopped[/]'}")
        console.print(f"ray {st['ray_address']}  dashboard {st['dashboard']}  mlflow {st['tracking_uri']}")
        console.print(f"logs: {st['dir']}/*.log, Ray's session logs under {st['ray_logs']}")
        console.print("listening: " + ", ".join(st["listening"]))
        if st["public"]:
            err.print(f"[bold red]listening on a public address:[/] {', '.join(st['public'])}")
    if st.get("public"):
        raise typer.Exit(1)


@cluster_app.command("env")
def cluster_env(directory: ClusterDir = None) -> None:
    """Shell exports for the running local cluster: eval "$(ltvl cluster env)"."""
    from ltvl.cluster.local import ClusterState, default_dir

    state = ClusterState.load((directory or default_dir()).resolve())
    if state is None:
        raise LtvlError(
            "no local cluster is recorded there",
            where=str(directory or default_dir()),
            fix="start one with: ltvl cluster up",
        )
    import shlex

    for k, v in state.env().items():  # quoted: a directory with a space, or with $(…), stays a value
        print(f"export {k}={shlex.quote(v)}")

