"""Batches from worker processes, in order, with prefetch and pinned memory.

A batch is a pure function of its slot number (``TaskData.batch(slot)``: rows and RNG derive
from (seed, slot)), so the loader asks for slots, not for "the next batch": workers may run
ahead in any order, the DataLoader hands them back in slot order, and rewinding or resuming
at step s gives bit-identical batches with 0 or N workers. Under DDP each rank asks only for
its own slots (interleaved by rank), which is the per-rank shard.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class _SlotDataset(Dataset):
    """Index = slot number; item = the whole collated batch (DataLoader's auto-batching is off)."""

    def __init__(self, make: Callable[[int], Any]):
        self.make = make

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, slot: int) -> Any:
        return self.make(slot)


def auto_workers(requested: int | None) -> int:
    """``None``: no workers on CPU (the trainer would compete with them for the same cores), up
    to 4 beside a GPU."""
    if requested is not None:
        return requested
    if not torch.cuda.is_available():
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // max(torch.cuda.device_count(), 1) - 1))


def stream(make: Callable[[int], Any], slots: Iterable[int], workers: int = 0, pin_memory: bool = False,
           prefetch: int = 4) -> Iterator[Any]:
    """``make(slot)`` for each slot, in order; computed ``workers``-wide ahead of the consumer."""
    slots = list(slots)
    if workers <= 0 and not pin_memory:
        yield from (make(s) for s in slots)
        return
    ctx = multiprocessing.get_context("fork") if workers and "fork" in multiprocessing.get_all_start_methods() \
        else None
    loader = DataLoader(_SlotDataset(make), batch_size=None, sampler=slots, num_workers=max(workers, 0),
                        pin_memory=pin_memory, prefetch_factor=prefetch if workers > 0 else None,
                        multiprocessing_context=ctx if workers > 0 else None,
                        generator=torch.Generator().manual_seed(0))  # else iter() draws from the global RNG,
    # which the trainer has just seeded for dropout: a loader must not shift it
    yield from loader
