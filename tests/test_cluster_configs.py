"""The cloud cluster configs pass Ray's own validation and ltvl's security rules; drift fails."""

import copy
from pathlib import Path

import pytest
import yaml

from ltvl.cluster.config_check import validate_cluster_yaml, validate_kuberay
from ltvl.util.errors import LtvlError

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_validation(name):
    cfg = validate_cluster_yaml(CLUSTER / name)
    types = cfg["available_node_types"]
    gpu = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert gpu and all(t.get("min_workers", 0) == 0 and t["max_workers"] >= 1 for t in gpu)  # autoscale from 0
    assert "trial_driver" in types[cfg["head_node_type"]]["resources"]


def _mutated(tmp_path, name, change):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    change(cfg)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(max_wrkers=3), "Additional properties are not allowed"),
        (
            lambda c: c["available_node_types"]["gpu_spot"].update(min_workers=3, max_workers=2),
            "min_workers 3 > max_workers 2",
        ),
        (
            lambda c: c["available_node_types"]["gpu_spot"].update(min_workers=9),
            "smaller than the sum of `min_workers`",
        ),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
        (lambda c: c["head_start_ray_commands"].append("ray start --head --dashboard-host=0.0.0.0"), "0.0.0.0"),
        (lambda c: c["setup_commands"].append("export AWS_KEY=AKIAABCDEFGHIJKLMNOP"), "credential"),
    ],
)
def test_aws_config_drift_is_caught(tmp_path, change, message):
    with pytest.raises(LtvlError, match=message):
        validate_cluster_yaml(_mutated(tmp_path, "aws.yaml", change))


def test_kuberay_manifest_structure_and_drift(tmp_path):
    doc = validate_kuberay(CLUSTER / "kuberay.yaml")
    assert doc["spec"]["workerGroupSpecs"][0]["minReplicas"] == 0
    bad = copy.deepcopy(doc)
    bad["spec"]["workerGroupSpecs"][0]["minReplicas"] = 5
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 2
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(LtvlError, match="minReplicas <= maxReplicas"):
        validate_kuberay(tmp_path / "k.yaml")
    bad = copy.deepcopy(doc)
    bad["spec"]["enableInTreeAutoscalng"] = True
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(LtvlError, match="unknown spec keys"):
        validate_kuberay(tmp_path / "k.yaml")


def test_no_config_binds_a_public_address():
    for f in CLUSTER.glob("*"):
        if f.is_file():
            assert "0.0.0.0" not in f.read_text(), f
