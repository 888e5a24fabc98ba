"""What a route to a subnetwork cost, in the units people budget in: optimizer steps, FLOPs counted
on the real step (torch's FlopCounterMode on a run's first step, PGD's extra passes included),
wall seconds where it ran, and GPU-hours at a stated sustained throughput. Masks do not make dense
kernels cheaper, so a sparse round counts the dense step's FLOPs."""

from __future__ import annotations

import os

DEFAULT_TFLOPS = 100.0  # sustained TFLOP/s for the GPU-hour estimate: set LTVL_GPU_TFLOPS to your device's


def gpu_tflops() -> float:
    """``LTVL_GPU_TFLOPS`` (default 100); a bad value is an error naming it (the sweep reads it first)."""
    raw = os.environ.get("LTVL_GPU_TFLOPS")
    if raw is None:
        return DEFAULT_TFLOPS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        from ltvl.util.errors import LtvlError
        raise LtvlError(f"LTVL_GPU_TFLOPS={raw!r} is not a positive throughput in TFLOP/s", where="LTVL_GPU_TFLOPS",
                        fix=f"unset it ({DEFAULT_TFLOPS:g}) or give your device's sustained TFLOP/s, e.g. 400")
    return value


def gpu_hours(flops: float, tflops: float | None = None) -> float:
    return flops / ((tflops or gpu_tflops()) * 1e12) / 3600.0


def human_flops(flops: float) -> str:
    """``3.2 PFLOP``: SI prefixes, three significant digits; ``—`` when nothing was counted."""
    if not flops or flops != flops:
        return "—"
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def cost_line(steps: int, flops: float, wall_s: float, tflops: float | None = None) -> str:
    """One line for a summary: steps, FLOPs, wall time, GPU-hours at the stated throughput."""
    t = tflops or gpu_tflops()
    gpu = f"≈ {gpu_hours(flops, t):.3g} GPU-hours at {t:g} TFLOP/s sustained (LTVL_GPU_TFLOPS)" if flops else \
        "FLOPs not counted (stores from before counting, or DDP)"
    return f"{steps:,} optimizer steps, {human_flops(flops)}, {wall_s / 60:.1f} min where they ran; {gpu}"
