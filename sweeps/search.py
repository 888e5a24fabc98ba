"""ltvl search sweep. Run: python sweeps/search.py [--config FILE] [--set key=value]... [--resume]
or: ray job submit --working-dir . -- python sweeps/search.py ...  (config: sweeps/configs/search.yaml)"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working-dir copy's ltvl under ray job submit

from ltvl.sweep.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("search", config_dir=Path(__file__).resolve().parent / "configs"))
