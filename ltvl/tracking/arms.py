"""One vocabulary for what a chain *is* (IMP, RP, θ''0, …), used alike in MLflow run names, the
``ltvl.arm`` tag, the sweep's console and the report's lines, so a reader never has to map
``theta0`` to ``magnitude`` to ``IMP``. The paper's names are the vocabulary."""

from __future__ import annotations

from ltvl.core.baselines import BASELINES
from ltvl.pruning.methods import METHODS

PRETRAIN = "pretrain"
SPARSE_CONTROL = "100%-sparse control"  # every prunable weight pruned, the rest trained (SPEC §7)
# the legacy ``ltvl.init`` tag of a chain or ticket -> its arm (older stores carry only that tag)

_TICKET_ARMS = {b.init_label: b.report_label for b in BASELINES.values()}


def arm_label(*, ticket: bool, init: str, rewind_step: int = 0, source_task: str = "", adv_use: str = "off",
              epsilon: float = 0.0, adaptive: bool = False, one_shot: bool = False, finetune: bool = False,
              gradual: bool = False) -> str:
    """The arm of a chain (``ticket=False``) or of a ticket chain over another chain's masks.

    IMP chains name their rewind point when it is not θ0 (``IMP θi@20``); AT-IMP chains their ε;
    tickets on θi masks say so, because they are a line of their own in the paper's figures. A
    chain on ``schedule: adaptive`` is marked ``(adaptive)``: its tries prune several levels in
    one round, so its tickets are not the plain schedule's and must not pool with them. A chain that
    fine-tunes the weights it pruned (``retrain: finetune``) is no ticket: ``prune + fine-tune`` when
    one-shot, ``IMP + fine-tune`` (learning-rate rewinding) when iterative. A gradual round (GMP)
    is ``GMP`` (``GMP θi@20`` when it starts from θi, ``GMP + fine-tune`` from θT)."""
    if finetune and not ticket:
        base = arm_label(ticket=False, init=init, source_task=source_task, adv_use=adv_use, epsilon=epsilon,
                         one_shot=one_shot, gradual=gradual)
        return "prune + fine-tune" if base == "one-shot" else f"{base} + fine-tune"
    if gradual and not ticket:
        base = arm_label(ticket=False, init=init, rewind_step=rewind_step, source_task=source_task,
                         adv_use=adv_use, epsilon=epsilon)
        return "GMP" + base[3:] if base.startswith("IMP") else f"{base} (gradual)"
    if one_shot and not ticket:  # its own line: one prune to the target, not IMP's iterations
        base = arm_label(ticket=False, init=init, rewind_step=rewind_step, source_task=source_task,
                         adv_use=adv_use, epsilon=epsilon)
        return "one-shot" + base[3:] if base.startswith("IMP") else f"{base} (one-shot)"
    if adaptive and not ticket:
        return arm_label(ticket=False, init=init, rewind_step=rewind_step, source_task=source_task,
                         adv_use=adv_use, epsilon=epsilon) + " (adaptive)"
    if ticket:
        on = f" (θi@{rewind_step} masks)" if rewind_step else ""
        if init == "theta0":  # the IMP ticket itself, moved to another task
            src = "pre-training ticket" if source_task == PRETRAIN else f"transfer from {source_task}"
            return src + on
        return _TICKET_ARMS.get(init, init) + on
    if init == "sparse100":  # a control is a control, whatever its dense run was trained with
        return SPARSE_CONTROL
    if adv_use in ("imp", "both") and epsilon > 0:
        return f"AT-IMP ε={epsilon:g}"
    if init == "theta_i":
        return f"IMP θi@{rewind_step}"
    return next((m.arm for m in METHODS.values() if m.init_label == init), init)  # the registry, read now


def short_sparsity(s: float) -> str:
    """Sparsity as everyone reads it: a percentage with one decimal (93.8%), everywhere."""
    return f"{s:.1%}"
