"""Every round of every chain under a sweep's chain root, as a table: chain store, round,
sparsity, mask sha256, metric. Run it on the main job before and after a refactor: the two tables
must be identical (docs/results/refactor-identity-check.md).

    python scripts/identity_table.py ~/.ltvl/sweeps/rewind-grid/chains > before.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(root: Path) -> list[tuple[str, int, float, str, float]]:
    out = []
    for rounds in sorted(root.glob("*/rounds")):
        for f in sorted(rounds.glob("*.json")):
            r = json.loads(f.read_text())
            out.append((rounds.parent.name, r["round"], r["sparsity"], r["mask_sha256"], r["metrics"]["metric"]))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python scripts/identity_table.py CHAINS_ROOT", file=sys.stderr)
        return 2
    print("| chain store | round | sparsity | mask sha256 | metric |\n|---|---|---|---|---|")
    for chain, rnd, sparsity, sha, metric in rows(Path(argv[0])):
        print(f"| `{chain}` | {rnd} | {sparsity:.4f} | `{sha}` | {json.dumps(metric)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
