"""SparseGPT's optimal-brain-surgeon arithmetic (Frantar & Alistarh, ICML 2023), for one Linear weight
W (rows × columns) and the Gram matrix H = XᵀX of its inputs over the calibration tokens.

Columns are eliminated left to right. When column j goes, the columns still free are F = {j, …, end}
and the OBS saliency of weight (r, j) is W[r, j]² / [H_F⁻¹]_jj; pruning it, the surgeon moves the
rest of row r by -W[r, j] · [H_F⁻¹]_{j,:} / [H_F⁻¹]_jj, the least-squares correction of the layer's
outputs on the calibration tokens. Every [H_F⁻¹] row needed is a row of U, the upper Cholesky factor
of H⁻¹, scaled (SparseGPT's trick): no inverse per column.

Two choices of ours, stated where they differ from the paper's code: the mask is chosen over the whole
layer at once from the saliencies of the unchanged weights (the paper re-chooses per block of 128
columns as it updates them), so SparseGPT fits ltvl's "scores → mask" registry and its exact counts;
and a column no calibration token used (H_jj = 0) keeps its weights (the paper zeroes them).
"""

from __future__ import annotations

import torch

DAMP = 0.01  # λ = 1% of the mean diagonal of H, added to it (the paper's percdamp)
BLOCK = 128  # columns whose corrections are applied together (lazy batch updates; the result is the same)


def inverse_cholesky_upper(gram: torch.Tensor) -> torch.Tensor:
    """U with UᵀU = (H + λI)⁻¹, float64; dead columns (H_jj = 0) get H_jj = 1 so H stays invertible."""
    h = gram.to(torch.float64).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(DAMP * torch.diagonal(h).mean())
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def saliency(weight: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """W[r, j]² / U_jj² (= W[r, j]² / [H_F⁻¹]_jj): what pruning each weight costs the layer's outputs."""
    return weight.to(torch.float64).square() / torch.diagonal(upper).square().unsqueeze(0)


@torch.no_grad()
def reconstruct(weight: torch.Tensor, upper: torch.Tensor, keep: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """W with the pruned weights (``keep`` False) set to 0 and the kept ones corrected column by column,
    in float64, returned in W's dtype."""
    w = weight.to(torch.float64).clone()
    columns = w.shape[1]
    for start in range(0, columns, block):
        end = min(start + block, columns)
        u = upper[start:end, start:end]
        errors = torch.zeros(w.shape[0], end - start, dtype=torch.float64)
        for i in range(end - start):
            j = start + i
            err = torch.where(keep[:, j], 0.0, w[:, j]) / u[i, i]  # 0 for a kept weight: nothing moves
            w[:, j:end] -= err.unsqueeze(1) * u[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, end:] -= errors @ upper[start:end, end:]
    w[~keep] = 0.0  # exactly 0 (the update leaves rounding dust where it subtracted w_j from itself)
    return w.to(weight.dtype)
