"""What a cluster can offer a trial: the nodes it has, or the node types its autoscaler can launch.

An autoscaling cluster starts with a head and no workers, so its live resources say nothing about
what a sweep may ask for: a check against them would refuse every sweep, and a concurrency sized
from them would never let the cluster grow. The node types come from Ray's own cluster config when
the autoscaler publishes one (KubeRay), else from ltvl's record of them in the GCS key-value store
(``ltvl cluster up --autoscale`` writes it; on a cloud head ``ltvl cluster announce`` does).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field

KV_NAMESPACE = "ltvl"
KV_KEY = "node_types"


@dataclass(frozen=True)
class NodeShape:
    name: str
    resources: dict[str, float] = field(hash=False)
    max_count: int = 1  # how many nodes of this shape can exist at once

    def fits(self, bundle: dict[str, float]) -> bool:
        return all(self.resources.get(k, 0) >= v for k, v in bundle.items() if v > 0)

    def how_many(self, bundle: dict[str, float]) -> int:
        """Bundles one node of this shape holds."""
        per = [self.resources.get(k, 0) / v for k, v in bundle.items() if v > 0]
        return int(math.floor(min(per) + 1e-9)) if per else 0

    def describe(self) -> str:
        res = ", ".join(f"{k} {v:g}" for k, v in sorted(self.resources.items())
                        if k in ("CPU", "GPU") or not k.startswith(("node:", "object_store", "memory", "accelerator")))
        count = "" if self.max_count == 1 else f", up to {self.max_count} nodes"
        return f"{self.name} ({res or 'no resources'}{count})"


@dataclass(frozen=True)
class Capacity:
    shapes: tuple[NodeShape, ...]
    autoscaling: bool = False
    max_workers: int | None = None  # the autoscaler's cap on worker nodes over all types
    head: str | None = None  # the head's type: not a worker, so not under that cap

    def _counts(self, key) -> list[tuple[NodeShape, int]]:
        """Each shape with the node count it can reach: the head, then the best worker shapes
        (by ``key``) first while the cap on worker nodes allows."""
        left = self.max_workers if self.max_workers is not None else 10**9
        out = []
        for s in sorted(self.shapes, key=lambda s: (s.name != self.head, -key(s))):
            n = s.max_count if s.name == self.head else min(s.max_count, left)
            left -= 0 if s.name == self.head else n
            out.append((s, n))
        return out

    def total(self, resource: str) -> float:
        return sum(s.resources.get(resource, 0) * n for s, n in self._counts(lambda s: s.resources.get(resource, 0)))

    def largest(self, resource: str) -> float:
        return max((s.resources.get(resource, 0) for s in self.shapes), default=0)

    def placeable(self, bundle: dict[str, float]) -> int:
        """How many such bundles the cluster can hold at once, at its largest."""
        return sum(s.how_many(bundle) * n for s, n in self._counts(lambda s: s.how_many(bundle)))

    def describe(self) -> str:
        if not self.autoscaling:
            return "nodes: " + "; ".join(s.describe() for s in self.shapes)
        cap = f" (at most {self.max_workers} worker nodes)" if self.max_workers is not None else ""
        return "node types: " + "; ".join(s.describe() for s in self.shapes) + cap


def capacity_from_config(config: dict) -> Capacity:
    """The node types of a Ray cluster-launcher config (``available_node_types``)."""
    head = config.get("head_node_type")
    out = []
    for name, spec in config.get("available_node_types", {}).items():
        count = 1 if name == head else int(spec.get("max_workers", config.get("max_workers", 0)))
        if count > 0 and name != head and "CPU" not in (spec.get("resources") or {}):
            from ltvl.util.errors import LtvlError
            raise LtvlError(f"node type {name!r} does not say its resources, so no sweep can size itself by it",
                            where=f"available_node_types.{name}.resources", fix="e.g. resources: {CPU: 8, GPU: 1}")
        if count > 0:
            out.append(NodeShape(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()}, count))
    return Capacity(tuple(out), autoscaling=True, max_workers=config.get("max_workers"), head=head)


def announce_capacity(gcs_address: str, cap: Capacity, env: dict | None = None) -> None:
    """Record the node types in the cluster's GCS, where every sweep driver can read them. Runs
    as its own process so that the caller's environment (token path) is the cluster's."""
    payload = json.dumps({"max_workers": cap.max_workers, "head": cap.head,
                          "types": [{"name": s.name, "resources": s.resources, "max_count": s.max_count}
                                    for s in cap.shapes]})
    code = ("import sys; from ray._raylet import GcsClient; "
            f"GcsClient(address=sys.argv[1]).internal_kv_put(b'{KV_KEY}', sys.argv[2].encode(), True, "
            f"b'{KV_NAMESPACE}', timeout=30)")
    out = subprocess.run([sys.executable, "-c", code, gcs_address, payload], env=env, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        from ltvl.util.errors import LtvlError
        raise LtvlError(f"could not record the node types in the cluster's GCS:\n{out.stderr[-2000:]}",
                        where=gcs_address)


def _announced() -> Capacity | None:
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    config = state.get_cluster_config()  # Ray's own (autoscaler v2 / KubeRay)
    if config is not None and config.node_group_configs:
        return Capacity(tuple(NodeShape(g.name, dict(g.resources), g.max_count if g.max_count >= 0 else 10**6)
                              for g in config.node_group_configs), autoscaling=True)
    raw = _internal_kv_get(KV_KEY, namespace=KV_NAMESPACE)
    if not raw:
        return None
    d = json.loads(raw)
    return Capacity(tuple(NodeShape(t["name"], t["resources"], int(t["max_count"])) for t in d["types"]),
                    autoscaling=True, max_workers=d.get("max_workers"), head=d.get("head"))


def cluster_capacity() -> Capacity:
    """The connected cluster's capacity: its node types if it autoscales, else its live nodes."""
    import ray

    if (announced := _announced()) is not None:
        return announced
    live = [n for n in ray.nodes() if n.get("Alive")]
    return Capacity(tuple(NodeShape(n.get("NodeName") or n["NodeID"][:8], dict(n["Resources"])) for n in live))
