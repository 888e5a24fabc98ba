"""Ray's fake multi-node provider, kept to 127.0.0.1 and preemptible from outside.

``ltvl cluster up --autoscale`` starts a Ray head whose autoscaler (``provider: {type: external,
module: ltvl.cluster.fake_provider.LoopbackNodeProvider}``) launches *real* raylets on this machine
as worker nodes, exactly as a cloud provider would launch instances. Over Ray's own
``FakeMultiNodeProvider`` it changes three things:

* each node gets its own Ray temp dir (nodes sharing one garbage-collect each other's runtime-env
  files, such as a job's working_dir) and keeps every port on 127.0.0.1;
* the head's node type takes its name from the config (``head``, as in ``cluster/aws.yaml``),
  not Ray's ``ray.head.default``;
* a node can be *preempted*: ``ltvl cluster preempt`` drops a request file in
  ``<cluster dir>/preempt/``, and the provider terminates that node the next time the autoscaler
  polls it, as a cloud reclaims a spot instance. The autoscaler then sees the node gone and
  launches a replacement if work is waiting.

Nodes run inside the autoscaler's monitor process (Ray's design for this provider), so they go
when the head goes.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

PREEMPT_DIR = "preempt"  # requests: one empty file per node id
PREEMPTED_DIR = "preempted"  # done: one JSON file per node id ({"node_type", "t"})


class LoopbackNodeProvider(FakeMultiNodeProvider):
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._cluster_dir = Path(provider_config["ltvl_dir"])
        self._ray_tmp = Path(provider_config["ltvl_ray_tmp"])
        head_type = provider_config.get("ltvl_head_type")
        if head_type:
            self._nodes[FAKE_HEAD_NODE_ID]["tags"][TAG_RAY_USER_NODE_TYPE] = head_type

    def non_terminated_nodes(self, tag_filters):
        self._serve_preemptions()
        return super().non_terminated_nodes(tag_filters)

    def _serve_preemptions(self) -> None:
        """Terminate the nodes someone asked to preempt, through the provider like a cloud would."""
        requests = self._cluster_dir / PREEMPT_DIR
        if not requests.is_dir():
            return
        done = self._cluster_dir / PREEMPTED_DIR
        for req in sorted(requests.iterdir()):
            node_id = req.name
            with self.lock:
                known = node_id in self._nodes and node_id != self._head_node_id
                node_type = self._nodes[node_id]["tags"][TAG_RAY_USER_NODE_TYPE] if known else None
            if known:
                self.terminate_node(node_id)
            done.mkdir(exist_ok=True)
            tmp = done / f".{node_id}.tmp"
            tmp.write_text(json.dumps({"node_type": node_type, "t": time.time(), "terminated": known}))
            os.replace(tmp, done / node_id)
            req.unlink(missing_ok=True)

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            node_id = self._next_hex_node_id()
            params = ray._private.parameter.RayParams(
                node_ip_address="127.0.0.1",
                temp_dir=str(self._ray_tmp / node_id[-5:]),
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0),
                num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,  # Ray node id == provider node id
                    "RAY_CLOUD_INSTANCE_ID": node_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {
                "tags": {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_USER_NODE_TYPE: node_type,
                    TAG_RAY_NODE_NAME: node_id,
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                    **tags,
                },
                "node": node,
            }
