"""Sizing sweeps by what a cluster can hold (its node types when it autoscales), the local
autoscaling config generated from cluster/aws.yaml, and the node timeline. No Ray needed."""
from pathlib import Path

import pytest
import yaml

from ltvl.cluster.autoscale import local_autoscaling_config, source_node_types
from ltvl.plan.options import DRIVER_CPU, Resources
from ltvl.ray.capacity import Capacity, NodeShape, capacity_from_config
from ltvl.ray.nodes import NodeTimeline
from ltvl.ray.resources import check_resources, concurrency, dense_cpus, driver_cpu
from ltvl.util.errors import LtvlError

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster" / "aws.yaml"


def _local(tmp_path, **kw) -> dict:
    return local_autoscaling_config(AWS, tmp_path, tmp_path / "ray", 6380, **kw)


def test_local_autoscaling_config_keeps_the_cloud_node_types_and_passes_ray_s_schema(tmp_path):
    from ray.autoscaler._private.util import validate_config
    cfg = _local(tmp_path, max_workers=2, idle_timeout_s=15)
    validate_config(cfg)  # Ray's own schema: a complete config, nothing left for Ray to fill in
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head" and set(types) == {"head", "gpu_spot", "gpu_ondemand"}
    assert types["head"]["resources"] == {"CPU": 0, "trial_driver": 1000} and types["head"]["max_workers"] == 0
    assert types["gpu_spot"]["resources"]["CPU"] == 1 and "GPU" not in types["gpu_spot"]["resources"]
    assert types["gpu_spot"]["min_workers"] == 0 and types["gpu_spot"]["max_workers"] == 2  # min(8, 2)
    assert cfg["idle_timeout_minutes"] == 0.25 and cfg["max_workers"] == 2
    prov = cfg["provider"]
    assert prov["type"] == "external" and prov["gcs_address"] == "127.0.0.1:6380" and prov["use_node_id_as_ip"]
    from ray.autoscaler._private.providers import _get_node_provider_cls
    assert _get_node_provider_cls(prov).__name__ == "LoopbackNodeProvider"  # the module path resolves


def test_bad_node_type_sources_are_refused(tmp_path):
    with pytest.raises(LtvlError, match="does not exist"):
        source_node_types(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("cluster_name: x\n")
    with pytest.raises(LtvlError, match="no available_node_types"):
        source_node_types(tmp_path / "bad.yaml")
    (tmp_path / "head.yaml").write_text(yaml.safe_dump({"head_node_type": "h", "available_node_types": {"h": {}}}))
    with pytest.raises(LtvlError, match="no worker node type"):
        source_node_types(tmp_path / "head.yaml")
    with pytest.raises(LtvlError, match="--max-workers 0 is below 1"):
        _local(tmp_path, max_workers=0)
    with pytest.raises(LtvlError, match="does not say its resources"):  # a sweep could not size itself by it
        capacity_from_config({"head_node_type": "h", "available_node_types": {
            "h": {"resources": {"CPU": 0}}, "w": {"resources": {}, "max_workers": 2}}})


def test_capacity_of_an_autoscaling_cluster_is_its_node_types_under_the_worker_cap(tmp_path):
    cap = capacity_from_config(_local(tmp_path, max_workers=2))
    assert cap.autoscaling and cap.total("CPU") == 2  # 2 worker nodes at most, whatever the types allow
    assert cap.placeable({"CPU": 0.9}) == 2 and cap.placeable({"CPU": 0.5}) == 4
    res = Resources(driver_resources={"trial_driver": 1})
    assert driver_cpu(res) == 0 and driver_cpu(Resources()) == DRIVER_CPU
    assert concurrency(res, cap) == 2  # one chain per worker node: the cluster grows to both
    assert dense_cpus(res, 1, cap) == 1  # a lone dense trial takes a whole (1-CPU) node, not 2 CPUs
    check_resources(res, cap)  # fits, though no worker is up yet
    cloud = capacity_from_config(yaml.safe_load(AWS.read_text()))
    assert cloud.total("GPU") == 8 and concurrency(Resources(use_gpu=True, driver_resources={"trial_driver": 1}),
                                                   cloud) == 8


def test_trials_no_node_can_hold_are_refused_naming_the_node_types(tmp_path):
    cap = capacity_from_config(_local(tmp_path, max_workers=2))
    with pytest.raises(LtvlError, match=r"a chains-stage training worker needs CPU 2, more than any node has "
                                        r"\(node types: head \(CPU 0, trial_driver 1000\); gpu_spot \(CPU 1, up to "
                                        r"2 nodes\)") as e:
        check_resources(Resources(cpus_per_worker=2, driver_resources={"trial_driver": 1}), cap)
    assert e.value.where == "resources.num_workers/cpus_per_worker"
    with pytest.raises(LtvlError, match="a dense-stage training worker needs CPU 1.5"):
        check_resources(Resources(driver_resources={"trial_driver": 1}), cap, stage="dense", cpus_per_worker=1.5)
    with pytest.raises(LtvlError, match="needs CPU 0.9, GPU 1, more than any node has"):
        check_resources(Resources(use_gpu=True), cap)
    with pytest.raises(LtvlError, match=r"a trial needs 2.7 CPUs \(3 workers of 0.9\) but the cluster holds 2"):
        check_resources(Resources(num_workers=3, driver_resources={"trial_driver": 1}), cap)
    with pytest.raises(LtvlError, match="trial drivers need resource 'gpu_driver'"):
        check_resources(Resources(driver_resources={"gpu_driver": 1}), cap)
    fixed = Capacity((NodeShape("a", {"CPU": 4.0}), NodeShape("b", {"CPU": 1.0})))  # live nodes of a fixed cluster
    assert "nodes: a (CPU 4); b (CPU 1)" == fixed.describe()
    assert concurrency(Resources(), fixed) == 5 and dense_cpus(Resources(), 1, fixed) == pytest.approx(3.9)


def test_node_timeline_reports_changes_peak_joins_and_losses():
    tl = NodeTimeline()
    for t, ids in [(0, {"h"}), (3, {"h"}), (19, {"h", "a"}), (21, {"h", "a", "b"}), (40, {"h", "b"}),
                   (44, {"h", "b", "c"}), (70, {"h", "b", "c"})]:
        tl.add(t, ids)
    assert [len(s.alive) for s in tl.changes()] == [1, 2, 3, 2, 3]
    assert tl.peak == 3 and tl.joined_left() == (3, 1)
    assert tl.line() == ("Cluster nodes: 1 at 0:00 → 2 at 0:19 → 3 at 0:21 → 2 at 0:40 → 3 at 0:44 "
                         "(peak 3; 3 joined, 1 left during the sweep)")
