"""Offline checks of the cluster configs in ``cluster/``, before anyone pays for a GPU.

The Ray cluster-launcher YAMLs (AWS, GCP) go through Ray's own schema and checks, shipped in the
installed ``ray`` package (``prepare_config`` fills in the provider defaults the way ``ray up``
does, then ``validate_config`` applies ray-schema.json). The KubeRay manifest gets a structural
check of the fields KubeRay needs. Both also get ltvl's security rules: services bound to
127.0.0.1, token auth on, no credentials in the file.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from ltvl.util.errors import LtvlError

CREDENTIAL_PATTERNS = (
    r"AKIA[0-9A-Z]{16}",
    r"aws_secret_access_key",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\"private_key\"\s*:",
    r"MLFLOW_TRACKING_PASSWORD\s*[:=]\s*\S",
)


def _load(path: str | Path) -> tuple[dict, str]:
    p = Path(path)
    if not p.exists():
        raise LtvlError(f"{p} does not exist", where=str(p))
    text = p.read_text()
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as e:
        raise LtvlError(f"{p} is not valid YAML ({e})", where=str(p)) from e


def check_security(text: str, where: str) -> None:
    if "0.0.0.0" in text:
        raise LtvlError(
            "a service is bound to 0.0.0.0", where=where, fix="bind to 127.0.0.1 and reach it through a port-forward"
        )
    if "RAY_AUTH_MODE" not in text or "token" not in text:
        raise LtvlError("Ray token authentication is not enabled", where=where, fix="set RAY_AUTH_MODE=token")
    for pat in CREDENTIAL_PATTERNS:
        if re.search(pat, text):
            raise LtvlError(
                f"the file seems to hold a credential (matches {pat!r})",
                where=where,
                fix="use instance profiles / workload identity / secrets, never literals",
            )


def validate_cluster_yaml(path: str | Path) -> dict:
    """A `ray up` config as Ray itself would check it; returns the config with defaults filled in."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg, text = _load(path)
    try:
        prepared = prepare_config(copy.deepcopy(cfg))
        validate_config(prepared)
    except jsonschema.ValidationError as e:
        loc = ".".join(str(x) for x in e.absolute_path) or "(top level)"
        raise LtvlError(
            f"Ray's cluster schema rejects {path}: {e.message}",
            where=f"{path}: {loc}",
            fix="see ray/autoscaler/ray-schema.json in the installed ray",
        ) from e
    except (ValueError, KeyError) as e:
        raise LtvlError(f"Ray rejects {path}: {e}", where=str(path)) from e
    for name, node in cfg.get("available_node_types", {}).items():
        lo, hi = node.get("min_workers", 0), node.get("max_workers", cfg.get("max_workers", 0))
        if lo > hi:
            raise LtvlError(
                f"node type {name}: min_workers {lo} > max_workers {hi}", where=f"{path}: available_node_types.{name}"
            )
    head_cmds = " ".join(cfg.get("head_start_ray_commands", []))
    if "--dashboard-host=127.0.0.1" not in head_cmds:
        raise LtvlError(
            "the head's dashboard / job API is not bound to 127.0.0.1",
            where=f"{path}: head_start_ray_commands",
            fix="add --dashboard-host=127.0.0.1 and use `ray dashboard` to port-forward",
        )
    check_security(text, str(path))
    return prepared


def validate_kuberay(path: str | Path) -> dict:
    """The fields KubeRay needs for an autoscaling RayCluster with a GPU group from 0 to N."""
    doc, text = _load(path)

    def need(cond: bool, what: str, where: str) -> None:
        if not cond:
            raise LtvlError(what, where=f"{path}: {where}")

    need(isinstance(doc, dict) and doc.get("apiVersion") == "ray.io/v1", "apiVersion must be ray.io/v1", "apiVersion")
    need(doc.get("kind") == "RayCluster", "kind must be RayCluster", "kind")
    need(bool(doc.get("metadata", {}).get("name")), "metadata.name is required", "metadata.name")
    spec = doc.get("spec") or {}
    allowed = {
        "rayVersion",
        "enableInTreeAutoscaling",
        "autoscalerOptions",
        "headGroupSpec",
        "workerGroupSpecs",
        "headServiceAnnotations",
        "suspend",
        "managedBy",
        "gcsFaultToleranceOptions",
    }
    unknown = set(spec) - allowed
    need(not unknown, f"unknown spec keys {sorted(unknown)}", "spec")
    need(spec.get("enableInTreeAutoscaling") is True, "in-tree autoscaling must be on", "spec.enableInTreeAutoscaling")
    head = spec.get("headGroupSpec") or {}
    need(
        head.get("rayStartParams", {}).get("dashboard-host") == "127.0.0.1",
        "the dashboard must bind 127.0.0.1 (reach it with kubectl port-forward)",
        "headGroupSpec.rayStartParams",
    )
    need(
        bool(head.get("template", {}).get("spec", {}).get("containers")),
        "the head needs a container",
        "headGroupSpec.template.spec.containers",
    )
    groups = spec.get("workerGroupSpecs") or []
    need(bool(groups), "at least one worker group is required", "spec.workerGroupSpecs")
    for i, g in enumerate(groups):
        w = f"spec.workerGroupSpecs[{i}]"
        need(bool(g.get("groupName")), "groupName is required", w)
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas")
        need(
            isinstance(hi, int) and isinstance(lo, int) and 0 <= lo <= hi,
            f"need 0 <= minReplicas <= maxReplicas, got {lo}..{hi}",
            w,
        )
        containers = g.get("template", {}).get("spec", {}).get("containers") or []
        need(bool(containers), "the group needs a container", f"{w}.template.spec.containers")
    need(
        any(
            "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            for g in groups
            for c in g["template"]["spec"]["containers"]
        ),
        "no worker group asks for GPUs",
        "spec.workerGroupSpecs",
    )
    check_security(text, str(path))
    return doc
