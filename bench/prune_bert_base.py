"""Global magnitude pruning of BERT-base's 85M encoder Linear weights: ltvl vs torch.nn.utils.prune.

Each method runs in its own subprocess on the same seeded model, so peak-memory
numbers do not contaminate each other. Targets (issue 2): ltvl <= 1 s and <= 1 GB
extra peak; masks identical to global_unstructured apart from ties; a mask file
<= n/8 + 64 KiB.

    python bench/prune_bert_base.py [--sparsity 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, peak_bytes, reset_peak, rss_bytes  # noqa: E402

INCLUDE = [r"(^|\.)encoder\."]  # the 85M Linear weights of the encoder (the definition)


def _model():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig())


def worker(method: str, sparsity: float, out_dir: str, repeats: int) -> dict:
    import torch

    from ltvl.pruning import PrunableSpec, prune_to_sparsity, save_mask, select_prunable

    model = _model()
    params = select_prunable(model, PrunableSpec.of(include=INCLUDE))
    n = sum(p.numel() for p in params.values())
    times = []
    if method == "ltvl":
        weights = {k: p.detach() for k, p in params.items()}
        for _ in range(repeats):
            reset_peak()
            base = rss_bytes()
            t = time.perf_counter()
            mask = prune_to_sparsity(weights, None, sparsity)
            times.append(time.perf_counter() - t)
            extra = peak_bytes() - base
        path = os.path.join(out_dir, "ltvl.mask")
        save_mask(mask, path)
        # the second IMP round: prune from an existing mask (alive-aware path)
        t = time.perf_counter()
        prune_to_sparsity(weights, mask, 1 - (1 - sparsity) ** 2)
        second = time.perf_counter() - t
        torch.save({k: v for k, v in mask.tensors.items()}, os.path.join(out_dir, "ltvl.pt"))
        return {
            "n": n,
            "seconds": min(times),
            "all_seconds": times,
            "extra_peak_bytes": extra,
            "second_round_seconds": second,
            "mask_file_bytes": os.path.getsize(path),
            "pruned": mask.n_pruned,
        }
    import torch.nn.utils.prune as tprune

    mods = dict(model.named_modules())
    k = round(sparsity * n)
    reset_peak()
    base = rss_bytes()
    t = time.perf_counter()
    tprune.global_unstructured(
        [(mods[name.rsplit(".", 1)[0]], "weight") for name in params], pruning_method=tprune.L1Unstructured, amount=k
    )
    secs = time.perf_counter() - t
    extra = peak_bytes() - base
    torch.save(
        {name: mods[name.rsplit(".", 1)[0]].weight_mask.bool() for name in params}, os.path.join(out_dir, "torch.pt")
    )
    return {"n": n, "seconds": secs, "extra_peak_bytes": extra, "pruned": k}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsity", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=["ltvl", "torch"])
    ap.add_argument("--out-dir")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.sparsity, a.out_dir, a.repeats)))
        return
    import torch

    with tempfile.TemporaryDirectory() as d:
        res = {}
        for m in ("ltvl", "torch"):
            p = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    m,
                    "--out-dir",
                    d,
                    "--sparsity",
                    str(a.sparsity),
                    "--repeats",
                    str(a.repeats),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            res[m] = json.loads(p.stdout.strip().splitlines()[-1])
        ours = torch.load(os.path.join(d, "ltvl.pt"), weights_only=True)
        theirs = torch.load(os.path.join(d, "torch.pt"), weights_only=True)
        differ = sum(int((ours[k] != theirs[k]).sum()) for k in ours)
        # A difference is acceptable only at a tie: |w| equal to the largest pruned magnitude.
        from ltvl.pruning import PrunableSpec, select_prunable

        w = {n: p.detach().abs() for n, p in select_prunable(_model(), PrunableSpec.of(include=INCLUDE)).items()}
        thr = max(float(w[k][~ours[k]].max()) for k in ours)
        non_tie = sum(int(((ours[k] != theirs[k]) & (w[k] != thr)).sum()) for k in ours)
    n, L, T = res["ltvl"]["n"], res["ltvl"], res["torch"]
    print(f"machine: {machine()}")
    print(f"prunable weights: {n:,}; sparsity {a.sparsity}; pruned {L['pruned']:,}")
    print(
        f"ltvl radix select      : {L['seconds']:.3f} s (runs {', '.join(f'{x:.3f}' for x in L['all_seconds'])}), "
        f"extra peak {L['extra_peak_bytes'] / 2**20:.0f} MiB; 2nd round (with mask) {L['second_round_seconds']:.3f} s"
    )
    print(f"torch global_unstructured: {T['seconds']:.3f} s, extra peak {T['extra_peak_bytes'] / 2**20:.0f} MiB")
    print(
        f"speed-up {T['seconds'] / L['seconds']:.1f}x; "
        f"memory {T['extra_peak_bytes'] / max(L['extra_peak_bytes'], 1):.1f}x less"
    )
    print(f"mask elements that differ from torch: {differ}, of which not at a tie (|w| == threshold): {non_tie}")
    limit = n / 8 + 64 * 1024
    print(
        f"mask file: {L['mask_file_bytes']:,} bytes; limit n/8 + 64 KiB = {limit:,.0f} -> "
        f"{'OK' if L['mask_file_bytes'] <= limit else 'OVER'}"
    )
    ok = L["seconds"] <= 1.0 and L["extra_peak_bytes"] <= 2**30 and non_tie == 0 and L["mask_file_bytes"] <= limit
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
