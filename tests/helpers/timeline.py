"""Where a test run's time went: per file and per xdist worker, from LTVL_TEST_TIMELINE's lines.

    LTVL_TEST_TIMELINE=/tmp/t.jsonl bash scripts/test.sh && python tests/helpers/timeline.py /tmp/t.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    t0 = min(r["start"] for r in rows)
    per_file: dict[str, float] = defaultdict(float)
    span: dict[str, list[float]] = {}
    for r in rows:
        per_file[r["test"].split("::")[0]] += r["stop"] - r["start"]
        lo, hi = span.get(r["worker"], [r["start"], r["stop"]])
        span[r["worker"]] = [min(lo, r["start"]), max(hi, r["stop"])]
    print(f"{'file':<44}{'s':>8}")
    for name, s in sorted(per_file.items(), key=lambda kv: -kv[1]):
        print(f"{name:<44}{s:>8.1f}")
    print(f"{'total (all workers)':<44}{sum(per_file.values()):>8.1f}")
    for w, (lo, hi) in sorted(span.items()):
        print(f"worker {w}: {lo - t0:7.1f} s → {hi - t0:7.1f} s")


if __name__ == "__main__":
    main(sys.argv[1])
