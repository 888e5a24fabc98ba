"""The local autoscaling cluster's config, generated from the cloud config's node types.

``cluster/aws.yaml`` defines the node types a real sweep runs on: a head with no CPUs for
training and the ``trial_driver`` resource, and preemptible GPU workers scaled from zero. The
local cluster keeps those names, minimums and the head's resources, and gives each worker type
a CPU-only shape that fits this machine, so the autoscaling path (scale up for a sweep, replace a
lost node, scale down when idle) is the one the cloud runs, at laptop size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ltvl.util.errors import LtvlError

DEFAULT_NODE_TYPES = Path(__file__).resolve().parents[2] / "cluster" / "aws.yaml"
PROVIDER_MODULE = "ltvl.cluster.fake_provider.LoopbackNodeProvider"


def source_node_types(path: Path) -> tuple[str, dict[str, dict]]:
    """(head type name, node types) of a `ray up` config, checked enough to build from."""
    if not Path(path).exists():
        raise LtvlError(f"{path} does not exist", where="--node-types", fix=f"e.g. --node-types {DEFAULT_NODE_TYPES}")
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    types, head = cfg.get("available_node_types"), cfg.get("head_node_type")
    if not isinstance(types, dict) or head not in (types or {}):
        raise LtvlError(f"{path} has no available_node_types with its head_node_type", where=str(path),
                        fix="give a Ray cluster-launcher config such as cluster/aws.yaml")
    if len(types) < 2:
        raise LtvlError(f"{path} has no worker node type to scale", where=f"{path}: available_node_types")
    return head, types


def local_autoscaling_config(
    node_types_file: Path,
    cluster_dir: Path,
    ray_tmp: Path,
    gcs_port: int,
    worker_cpus: float = 1,
    max_workers: int = 2,
    idle_timeout_s: float = 20,
    object_store_mb: int = 256,
) -> dict:
    """A complete autoscaler config for :class:`LoopbackNodeProvider` (Ray's wheel lacks the
    fake provider's defaults file, so nothing may be left for Ray to fill in)."""
    if max_workers < 1:
        raise LtvlError(f"--max-workers {max_workers} is below 1", where="--max-workers", fix="--max-workers 2")
    if idle_timeout_s <= 0:
        raise LtvlError(f"--idle-timeout {idle_timeout_s:g} must be positive", where="--idle-timeout")
    head, source = source_node_types(node_types_file)
    types: dict[str, dict] = {
        head: {"resources": dict(source[head].get("resources") or {}), "node_config": {}, "max_workers": 0}}
    for name, spec in source.items():
        if name == head:
            continue
        types[name] = {
            "resources": {"CPU": worker_cpus, "object_store_memory": object_store_mb * 1024 * 1024},
            "node_config": {},
            "min_workers": min(int(spec.get("min_workers", 0)), max_workers),
            "max_workers": min(int(spec.get("max_workers", max_workers)), max_workers),
        }
    return {
        "cluster_name": f"ltvl-local-{gcs_port}",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "external",
            "module": PROVIDER_MODULE,
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "use_node_id_as_ip": True,  # nodes share 127.0.0.1: the autoscaler tells them apart by id
            "disable_node_updaters": True,  # nothing to ssh into: the nodes start ready
            "disable_launch_config_check": True,
            "ltvl_dir": str(cluster_dir),
            "ltvl_ray_tmp": str(ray_tmp),
            "ltvl_head_type": head,
        },
        "auth": {},
        "available_node_types": types,
        "head_node_type": head,
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass(frozen=True)
class AutoscaleSpec:
    """``ltvl cluster up --autoscale``: where the node types come from and how far to scale."""

    node_types_file: Path = DEFAULT_NODE_TYPES
    max_workers: int = 2
    idle_timeout_s: float = 20

    def config(self, cluster_dir: Path, ray_tmp: Path, gcs_port: int, worker_cpus: float,
               object_store_mb: int) -> dict:
        return local_autoscaling_config(self.node_types_file, cluster_dir, ray_tmp, gcs_port, worker_cpus,
                                        self.max_workers, self.idle_timeout_s, object_store_mb)
