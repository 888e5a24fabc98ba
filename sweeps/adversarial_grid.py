"""ltvl adversarial_grid sweep. Run:
python sweeps/adversarial_grid.py [--config FILE] [--set key=value]... [--resume]
or: ray job submit --working-dir . -- python sweeps/adversarial_grid.py ...
(config: sweeps/configs/adversarial_grid.yaml)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working-dir copy's ltvl under ray job submit

from ltvl.sweep.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("adversarial_grid", config_dir=Path(__file__).resolve().parent / "configs"))
