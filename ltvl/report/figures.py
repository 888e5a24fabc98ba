"""The paper's figures as PNGs (matplotlib, headless): sparsity curves with a shaded std and the
p% line (Fig. 2), rewinding curves, the transfer heatmap (Fig. 3), the mask-IoU heatmap (Fig. 8)
and the AT-IMP curves (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
SIZE = (6.4, 4.2)  # inches: 640 x 420 pixels at DPI


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def sparsity_curves(curves: pd.DataFrame, task: str, lines: list[str], p_line: float | None, title: str,
                    path: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    for line in lines:
        c = curves[(curves["task"] == task) & (curves["line"] == line)].sort_values("sparsity")
        if c.empty:
            continue
        x = c["sparsity"] * 100
        lo, hi = int(c["n"].min()), int(c["n"].max())
        ax.plot(x, c["mean"], marker="o", label=f"{line} (n={lo})" if lo == hi else f"{line} (n={lo}–{hi})")
        sd = c["std"].fillna(0)
        ax.fill_between(x, c["mean"] - sd, c["mean"] + sd, alpha=0.2)
    if p_line is not None:
        ax.axhline(p_line, color="grey", linestyle="--", label="p of dense")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("metric")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def heatmap(matrix: pd.DataFrame, title: str, path: Path, fmt: str = "{:.3f}", vmin=None, vmax=None) -> Path:
    """``matrix``: numbers (NaN = missing, shown as such)."""
    fig, ax = plt.subplots(figsize=SIZE)
    im = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.index)), [str(i) for i in matrix.index])
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix.iat[i, j]
            ax.text(j, i, "missing" if v != v else fmt.format(v), ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, path)
