"""The paper's figures as PNGs (matplotlib, headless): sparsity curves with a shaded std and the
p% line (Fig. 2), rewinding curves, the transfer heatmap (Fig. 3), the mask-IoU heatmap (Fig. 8)
and the AT-IMP curves (Fig. 4).

Sparsity is drawn on a log axis of the weights that *remain* (100% … 1%): IMP's levels are
geometric, so they sit evenly along it, and the high sparsities where tickets are won or lost get
as much room as the easy ones (a linear sparsity axis crams 75–95% into a fifth of the plot)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

DPI = 160
SIZE = (8.0, 5.0)  # inches: 1280 x 800 pixels at DPI
plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "legend.fontsize": 9})


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def remaining(sparsity: float | pd.Series) -> float | pd.Series:
    """Percent of weights left: the x of every sparsity plot (log scale)."""
    return (1 - sparsity) * 100


def sparsity_axis(ax, sparsities) -> None:
    """Log axis of remaining weights, labelled in sparsity, one tick per level that was run."""
    levels = sorted({round(float(s), 4) for s in sparsities})
    ax.set_xscale("log")
    ax.set_xlim(105, max(0.8 * remaining(max(levels)), 0.5) if levels else 1)
    ticks = [remaining(s) for s in levels]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{s:.1%}" for s in levels], rotation=45 if len(levels) > 6 else 0)
    ax.set_xlabel("sparsity (log scale of the weights that remain)")


def threshold_line(ax, value: float | None, p: float | None) -> None:
    if value is None or value != value:
        return
    label = f"{p:.0%} of dense ({value:.3f})" if p else f"threshold ({value:.3f})"
    ax.axhline(value, color="grey", linestyle="--", linewidth=1.2, label=label)


def control_lines(ax, controls: dict[str, float] | None) -> None:
    """SPEC §7's controls as horizontal lines: what a model that learned nothing (majority answer),
    or nothing beyond embeddings and head (100%-sparse), scores."""
    for (name, value), style in zip((controls or {}).items(), (":", "-.", (0, (1, 3)))):
        ax.axhline(value, color="black", linestyle=style, linewidth=1.2, label=f"{name} ({value:.3f})")


def sparsity_curves(curves: pd.DataFrame, task: str, lines: list[str], p_line: float | None, title: str,
                    path: Path, p: float | None = None, controls: dict[str, float] | None = None) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    shown = curves[(curves["task"] == task) & (curves["line"].isin(lines))]
    for line in lines:
        c = shown[shown["line"] == line].sort_values("sparsity")
        if c.empty:
            continue
        x = remaining(c["sparsity"])
        lo, hi = int(c["n"].min()), int(c["n"].max())
        n = f"n={lo}" if lo == hi else f"n={lo}–{hi}"
        ax.plot(x, c["mean"], marker="o", linewidth=2, label=f"{line} ({n})")
        sd = c["std"].fillna(0)
        ax.fill_between(x, c["mean"] - sd, c["mean"] + sd, alpha=0.15)
    threshold_line(ax, p_line, p)
    control_lines(ax, controls)
    sparsity_axis(ax, shown["sparsity"])
    ax.set_ylabel("metric (mean ± std over seeds)")
    ax.set_title(title)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def cost_frontier(pts: pd.DataFrame, task: str, p_line: float | None, p: float | None, path: Path) -> Path:
    """Metric against the optimizer steps spent to reach it, one line per arm, each point labelled
    with its sparsity: which route buys the most sparsity for a budget."""
    fig, ax = plt.subplots(figsize=SIZE)
    mine = pts[pts["task"] == task]
    for line, g in mine.groupby("line"):
        g = g.sort_values("cost")
        se = g["se"].fillna(0)
        ax.errorbar(g["cost"], g["mean"], yerr=2 * se, marker="o", linewidth=2, capsize=3, label=line)
        for c, m, s in zip(g["cost"], g["mean"], g["sparsity"]):
            ax.annotate(f"{s:.1%}", (c, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
    threshold_line(ax, p_line, p)
    ax.set_xlabel("optimizer steps to reach it (dense run included)")
    ax.set_ylabel("metric (± 2 standard errors)")
    ax.set_title(f"{task}: metric vs training cost")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def chain_curves(series: list[tuple[str, str, list[tuple[float, float]]]], threshold: float | None, p: float,
                 title: str, path: Path, controls: dict[str, float] | None = None) -> Path:
    """One line per chain (``(name, arm, [(sparsity, metric), ...])``), one colour per arm."""
    fig, ax = plt.subplots(figsize=SIZE)
    arms = sorted({a for _n, a, _pts in series})
    colours = {a: plt.cm.tab10(i % 10) for i, a in enumerate(arms)}
    styles = ["-", "--", ":", "-."]
    seen: dict[str, int] = {}
    for name, arm, pts in series:
        pts = sorted(pts)
        k = seen[arm] = seen.get(arm, -1) + 1
        ax.plot([remaining(s) for s, _m in pts], [m for _s, m in pts], marker="o", linewidth=2,
                linestyle=styles[k % len(styles)], color=colours[arm], label=name)
    threshold_line(ax, threshold, p)
    control_lines(ax, controls)
    sparsity_axis(ax, [s for _n, _a, pts in series for s, _m in pts])
    ax.set_ylabel("metric")
    ax.set_title(title)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def heatmap(matrix: pd.DataFrame, title: str, path: Path, fmt: str = "{:.3f}", vmin=None, vmax=None) -> Path:
    """``matrix``: numbers (NaN = missing, shown as such). Cell text is black on light cells and
    white on dark ones, so every number can be read."""
    values = matrix.to_numpy(dtype=float)
    n = max(matrix.shape)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * n + 3), max(4.5, 0.8 * n + 2)))
    im = ax.imshow(values, cmap="Blues", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.index)), [str(i) for i in matrix.index])
    lo = vmin if vmin is not None else pd.Series(values.ravel()).min()
    hi = vmax if vmax is not None else pd.Series(values.ravel()).max()
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = values[i, j]
            dark = v == v and hi > lo and (v - lo) / (hi - lo) > 0.6
            ax.text(j, i, "missing" if v != v else fmt.format(v), ha="center", va="center",
                    color="white" if dark else "black", fontsize=10)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def iou_panel(matrices: dict[str, pd.DataFrame], path: Path) -> Path:
    """Mask IoU at every sparsity in one figure, one heatmap each, on one shared colour scale
    (from the lowest IoU shown to 1, so that differences of a few percent are visible)."""
    lo = min(float(m.to_numpy(dtype=float).min()) for m in matrices.values())
    lo = min(lo, 0.999) - 0.01
    n = len(matrices)
    size = max(len(m) for m in matrices.values())
    fig, axes = plt.subplots(1, n, figsize=(max(4.5, 0.9 * size + 2.5) * n, max(4.5, 0.8 * size + 2.2)),
                             squeeze=False)
    im = None
    for ax, (label, m) in zip(axes[0], matrices.items()):
        values = m.to_numpy(dtype=float)
        im = ax.imshow(values, cmap="Blues", vmin=lo, vmax=1)
        ax.set_xticks(range(len(m.columns)), [str(c) for c in m.columns], rotation=30, ha="right")
        ax.set_yticks(range(len(m.index)), [str(i) for i in m.index])
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=10,
                        color="white" if (v - lo) / (1 - lo) > 0.6 else "black")
        ax.set_title(f"at {label} sparsity")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="IoU of kept weights")
    fig.suptitle("mask overlap (IoU)")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
