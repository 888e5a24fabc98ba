"""Another seed's masks, level by level: what a chain with ``masks_of_seed`` trains.

Why: the cost to a ticket is dominated by each seed walking its own path of IMP rounds
(bench/RESULTS.md). The seeds of one recipe share θ0 for every pre-trained weight, and tickets
transfer, so one seed (the lead) can walk the path and the others only check its masks on their
own θ0, data order and dense reference. The lead is the chain of the same spec with seed
``masks_of_seed`` and no start level; it must have settled its search.

A level the lead tried gives the mask it tried. Any other level is pruned from the trained
weights of the highest level below it that the lead kept and stored (its dense run if none),
with the lead's own pruning seed: the mask a jump from there would have drawn, at no training
cost. Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ltvl.core.chain import ChainSpec, ChainStore
from ltvl.core.dense import DenseSpec, DenseStore
from ltvl.core.train import derive_seed
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask
from ltvl.pruning.prune import prune_to_sparsity
from ltvl.util.errors import LtvlError


def lead_spec(spec: ChainSpec) -> ChainSpec:
    """The lead chain's spec: the same recipe with the lead's seed and no start level."""
    seed = spec.schedule.masks_of_seed
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=seed),
                               schedule=dataclasses.replace(spec.schedule, start=None, masks_of_seed=None))


class LeadMasks:
    """The settled lead chain's mask for any level of the schedule, read from its store."""

    def __init__(self, root: str | Path, spec: ChainSpec):
        self.spec = lead_spec(spec)
        self.store = ChainStore(root, self.spec, writer=False)
        self.dense = DenseStore(root, DenseSpec.of(self.spec), writer=False)
        records = self.store.finished_rounds()
        if len(records) < 2 or records[-1].get("next_mask_sha256") is not None:
            raise LtvlError(f"the lead chain (seed {self.spec.train.seed}) has not settled its search",
                            where=str(self.store.dir), fix="run the lead seed's adaptive chain to its answer first "
                            "(a sweep with share_masks runs it in the stage before)")
        self.tried = {rec["level"]: rec for rec in records[1:]}
        self.sparsities = self.spec.sparsities()

    def _load(self, sha: str) -> Mask:
        return load_mask(self.store.find_mask(sha, self.dense))

    def source_level(self, level: int) -> int:
        """The level whose trained weights were pruned to give :meth:`mask_at` ``level`` (0: the dense run)."""
        if level in self.tried:
            return int(self.tried[level]["parent_level"])
        return max([lv for lv, r in self.tried.items() if lv < level and r.get("kept") and r.get("weights_sha256")],
                   default=0)

    def mask_at(self, level: int) -> Mask:
        if level in self.tried:
            return self._load(self.tried[level]["mask_sha256"])
        source = self.source_level(level)
        if source:
            src = self.tried[source]
            parent = self._load(src["mask_sha256"])
            weights = self.store.get_weights(src["weights_sha256"], parent.names)
        else:  # the lead's dense run
            weights = self.dense.final_weights(self.dense.record())
            parent = Mask.dense_like(weights, metadata={"round": 0, "dense": self.dense.sha256})
        return prune_to_sparsity(weights, parent, self.sparsities[level - 1], method=self.spec.method,
                                 scope=self.spec.scope, seed=derive_seed(self.spec.train.seed, "prune", level - 1),
                                 metadata={"level": level, "parent_level": source, "chain": self.store.sha256})
