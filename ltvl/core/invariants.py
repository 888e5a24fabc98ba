"""What is checked on every ticket after its round trains, and recorded with it (``RoundResult.checks``,
MLflow's ``ltvl.checks``): the claims a sparse result rests on, measured rather than assumed.

- ``pruned_nonzero``: pruned weights that are not exactly 0 in the trained model (must be 0);
- ``sparsity_measured`` against ``sparsity_nominal``: the mask prunes the schedule's level, up to the
  rounding of one weight per comparison group (global: 1, layerwise: per tensor, row: per row);
- ``optimizer_state_masked``: the optimizer's moments are 0 where pruned when training ends;
- ``start_sha256``: the file the round started from (θi, or θT for a fine-tune's first round), whose
  sha256 was verified when it was loaded; a later round of a fine-tuning chain names the stored state.

A breach is recorded, never hidden: ``ok`` is False and the tag says which claim failed.
"""

from __future__ import annotations

import torch
from torch import nn

from ltvl.pruning.mask import Mask
from ltvl.pruning.prune import Scope


def groups_of(mask: Mask, scope: Scope | str) -> int:
    scope = Scope(scope)
    if scope is Scope.GLOBAL:
        return 1
    if scope is Scope.ROW:
        return sum(int(t.shape[0]) for t in mask.tensors.values())
    return len(mask.tensors)


@torch.no_grad()
def ticket_checks(model: nn.Module, mask: Mask, nominal: float, scope: Scope | str,
                  optimizer_state_masked: bool | None, start_sha256: str | None) -> dict:
    params = dict(model.named_parameters())
    nonzero = sum(int(params[n].detach()[~t.to(params[n].device)].ne(0).sum()) for n, t in mask.tensors.items())
    tolerance = 0.5 * groups_of(mask, scope) / max(mask.numel, 1) + 1e-12
    sparsity_ok = abs(mask.sparsity - nominal) <= tolerance
    out = {"pruned_nonzero": nonzero, "sparsity_nominal": nominal, "sparsity_measured": mask.sparsity,
           "sparsity_ok": sparsity_ok, "optimizer_state_masked": optimizer_state_masked,
           "start_sha256": start_sha256}
    out["ok"] = nonzero == 0 and sparsity_ok and optimizer_state_masked is not False
    return out


def label(checks: dict) -> str:
    """``ok · …`` or ``FAILED · …``: the ``ltvl.checks`` tag."""
    return ("ok · " if checks.get("ok") else "FAILED · ") + describe(checks)


def describe(checks: dict) -> str:
    """One line for a tag or a log: every claim, and which failed."""
    parts = [("pruned weights zero" if checks["pruned_nonzero"] == 0
              else f"BREACH: {checks['pruned_nonzero']} pruned weights nonzero"),
             (f"sparsity {checks['sparsity_measured']:.4%} = nominal" if checks["sparsity_ok"]
              else f"BREACH: sparsity {checks['sparsity_measured']:.4%} vs nominal {checks['sparsity_nominal']:.4%}")]
    if checks.get("optimizer_state_masked") is not None:
        parts.append("optimizer state masked" if checks["optimizer_state_masked"]
                     else "BREACH: optimizer state nonzero where pruned")
    if checks.get("start_sha256"):
        parts.append(f"started from sha256 {checks['start_sha256'][:12]}")
    return " · ".join(parts)
