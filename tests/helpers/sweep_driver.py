"""A sweep driver in its own process, so a test can kill it like a crashed driver and resume.

    python sweep_driver.py SPEC.json   (SPEC: {"space": ..., "root": ..., "storage": ..., "name": ...,
                                         "resume": bool, "out": results.json})
"""
import json
import sys

import ray
from ray import tune

from ltvl.params.schema import DEFAULTS
from ltvl.ray.space import trial_params
from ltvl.ray.stages import run_chains

spec = json.loads(open(sys.argv[1]).read())
space = {k: tune.grid_search(v["grid_search"]) if isinstance(v, dict) and "grid_search" in v else v
         for k, v in spec["space"].items()}
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never join a running cluster
callbacks, sender = [], None
if spec.get("tracking_uri"):  # lineage into MLflow, as the sweep entry points do
    from ltvl.ray.lineage import LineageCallback
    from ltvl.tracking.mlflow_lineage import LineageTracker
    from ltvl.tracking.sender import LineageSender
    tracker = LineageTracker(spec["tracking_uri"], spec["name"], "rewind_grid", spec["root"] + "/spool.jsonl")
    tracker.connect()
    sender = LineageSender(tracker).start()
    callbacks = [LineageCallback(sender, spec["root"])]
grid = run_chains(space, root=spec["root"], storage=spec["storage"], name=spec["name"], resume=spec["resume"],
                  max_concurrent_trials=1, callbacks=callbacks)
if sender is not None:
    assert sender.close(60) == 0, "MLflow did not take every record"
out = [{"config": {k: {**DEFAULTS, **trial_params(r.config)}[k] for k in spec["space"]},
        "error": str(r.error) if r.error else None,
        "rounds": list(r.metrics_dataframe["round"]) if r.metrics_dataframe is not None else [],
        "iterations": list(r.metrics_dataframe["training_iteration"]) if r.metrics_dataframe is not None else [],
        "masks": list(r.metrics_dataframe["mask_sha256"]) if r.metrics_dataframe is not None else [],
        **{k: list(r.metrics_dataframe[k]) if r.metrics_dataframe is not None else [] for k in ("metric", "sparsity")}}
       for r in grid]
open(spec["out"], "w").write(json.dumps(out))
