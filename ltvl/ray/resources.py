"""What a trial costs on the cluster, checked before any trial starts.

Every check is against :class:`ltvl.ray.capacity.Capacity`: the live nodes of a fixed cluster,
or the node types an autoscaling one can launch (which may have no worker yet)."""

from __future__ import annotations

from ltvl.plan.options import DRIVER_CPU, Resources
from ltvl.ray.capacity import Capacity, cluster_capacity
from ltvl.util.errors import LtvlError


def driver_cpu(res: Resources) -> float:
    """A trial driver's CPU. Drivers pinned to a custom resource (``trial_driver``, offered by a
    head with no CPUs for training) take none: they only wait on their TorchTrainer."""
    return 0.0 if res.driver_resources else DRIVER_CPU


def worker_bundle(res: Resources, cpus_per_worker: float | None = None) -> dict[str, float]:
    return {"CPU": res.cpus_per_worker if cpus_per_worker is None else cpus_per_worker,
            **({"GPU": 1.0} if res.use_gpu else {})}


def check_resources(res: Resources, cap: Capacity | None = None, stage: str = "chains",
                    cpus_per_worker: float | None = None) -> None:
    """Refuse, before any trial starts, a trial shape the cluster can never place."""
    cap = cap or cluster_capacity()
    driver = {"CPU": driver_cpu(res), **res.driver_resources}
    if not any(s.fits(driver) for s in cap.shapes):
        name = next(iter(res.driver_resources), "CPU")
        raise LtvlError(f"trial drivers need resource {name!r} x{driver.get(name, 0):g}, which no node offers "
                        f"({cap.describe()})", where="resources.driver_resources",
                        fix=f"start the head with --resources='{{\"{name}\": 1000}}' or drop it")
    bundle = worker_bundle(res, cpus_per_worker)
    where = "resources.num_workers/cpus_per_worker" + ("/use_gpu" if res.use_gpu else "")
    if not any(s.fits(bundle) for s in cap.shapes):
        need = ", ".join(f"{k} {v:g}" for k, v in bundle.items())
        raise LtvlError(f"a {stage}-stage training worker needs {need}, more than any node has ({cap.describe()})",
                        where=where, fix="lower cpus_per_worker (or use_gpu), or add a larger node type")
    if cap.placeable(bundle) < res.num_workers:
        need_cpu = res.num_workers * bundle["CPU"] + driver_cpu(res)
        raise LtvlError(f"a trial needs {need_cpu:g} CPUs ({res.num_workers} workers of {bundle['CPU']:g}) but the "
                        f"cluster holds {cap.placeable(bundle)} such workers at most ({cap.describe()})",
                        where=where, fix="lower num_workers or cpus_per_worker")


def concurrency(res: Resources, cap: Capacity | None = None) -> int:
    """Chains in flight at once: as many as the cluster holds at its largest (an autoscaling
    cluster grows to them)."""
    if res.max_concurrent_trials:
        return res.max_concurrent_trials
    cap = cap or cluster_capacity()
    # a driver with no resource of its own shares its workers' nodes: count its CPU with them
    share = {"CPU": res.cpus_per_worker + driver_cpu(res) / res.num_workers, **({"GPU": 1.0} if res.use_gpu else {})}
    return max(1, cap.placeable(share) // res.num_workers)


def dense_cpus(res: Resources, n_groups: int, cap: Capacity | None = None) -> float:
    """Nothing else runs during the dense stage, so on CPU its few trials share the whole cluster
    (a lone dense run on a 2-core machine would otherwise train on one thread, one core idle)."""
    if res.use_gpu:
        return res.cpus_per_worker
    cap = cap or cluster_capacity()
    per_trial = cap.total("CPU") / min(n_groups, concurrency(res, cap))
    largest = max((s.resources.get("CPU", 0) for s in cap.shapes if s.fits(worker_bundle(res))), default=1)
    per_worker = min((per_trial - driver_cpu(res)) / res.num_workers, largest - driver_cpu(res))  # fits one node
    return max(res.cpus_per_worker, per_worker)
