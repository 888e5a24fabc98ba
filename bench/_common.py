"""Shared helpers for benchmarks: machine description and peak-memory probes (Linux /proc)."""

from __future__ import annotations

import os
import platform
import re


def machine() -> str:
    import torch
    cpu = "unknown cpu"
    try:
        cpu = re.search(r"model name\s*:\s*(.+)", open("/proc/cpuinfo").read()).group(1).strip()
    except (OSError, AttributeError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"cuda={'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def rss_bytes() -> int:
    return _status("VmRSS")


def reset_peak() -> None:
    """Return freed heap to the OS, then make VmHWM (peak RSS) restart from the current RSS.

    Without the trim, a measured function could reuse freed-but-resident pages and
    look free of cost.
    """
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    return _status("VmHWM")
