"""What a trial costs on the cluster, checked before any trial starts."""

from __future__ import annotations

import ray

from ltvl.sweep.options import DRIVER_CPU, Resources
from ltvl.util.errors import LtvlError


def check_resources(res: Resources) -> None:
    """Refuse, before any trial starts, a trial shape the cluster can never place."""
    total = ray.cluster_resources()
    for name, amount in res.driver_resources.items():
        if total.get(name, 0) < amount:
            raise LtvlError(f"trial drivers need resource {name!r} x{amount:g}, the cluster offers "
                            f"{total.get(name, 0):g}", where="resources.driver_resources",
                            fix=f"start the head with --resources='{{\"{name}\": 1000}}' or drop it")
    need_cpu = res.num_workers * res.cpus_per_worker + DRIVER_CPU
    if res.use_gpu and total.get("GPU", 0) < res.num_workers:
        raise LtvlError(f"a trial needs {res.num_workers} GPUs but the cluster has {total.get('GPU', 0):g}",
                        where="resources.num_workers/use_gpu", fix="lower num_workers or add GPU nodes")
    if total.get("CPU", 0) < need_cpu:
        raise LtvlError(f"a trial needs {need_cpu:g} CPUs but the cluster has {total.get('CPU', 0):g}",
                        where="resources.num_workers/cpus_per_worker", fix="lower num_workers or cpus_per_worker")


def concurrency(res: Resources) -> int:
    per_trial = res.num_workers * res.cpus_per_worker + DRIVER_CPU
    return res.max_concurrent_trials or max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))


def dense_cpus(res: Resources, n_groups: int) -> float:
    """Nothing else runs during the dense stage, so on CPU its few trials share the whole cluster
    (a lone dense run on a 2-core machine would otherwise train on one thread, one core idle)."""
    if res.use_gpu:
        return res.cpus_per_worker
    per_trial = ray.cluster_resources().get("CPU", 1) / min(n_groups, concurrency(res))
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    per_worker = min((per_trial - DRIVER_CPU) / res.num_workers, largest_node - DRIVER_CPU)  # must fit one node
    return max(res.cpus_per_worker, per_worker)
