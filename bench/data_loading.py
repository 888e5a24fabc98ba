"""Paper-scale data: write, open, share and stream a VQA-v2-shaped image table (issue 13).

Every phase runs in its own subprocess (so peak RSS is the phase's own) against a baseline
measured in the same run:

  write   ``ltvl data synth`` (streaming writer: checks, manifest, sha256) vs the same record
          batches written with a bare ``pyarrow.ipc`` file writer (no hash, no checks).
  open    open_split + the first batch, warm and with the file evicted from the page cache.
  share   four processes reading the whole table at once vs one alone: total PSS (RSS counts a
          shared page once per process; PSS splits it, so it is the memory really used).
  stream  ImageTable.batch (36 x 2048 features) in examples/s on one core vs a memcpy of the
          same bytes from the same memory map.
  imp     ``ltvl imp --steps 2`` on the big table vs on a 600-image table of the same shape:
          the difference in peak RSS is what the data costs.

    .venv/bin/python bench/data_loading.py --images 60000 --dir /tmp/ltvl-bench
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine  # noqa: E402

SHAPE = {"regions": 36, "feat_dim": 2048}


def child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last (plus its peak RSS)."""
    wrapped = (code + "\nimport resource, json as _j\n"
               "_r = globals().get('RESULT', {}); _r['peak_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
               " * 1024\nprint(_j.dumps(_r))")
    out = subprocess.run([sys.executable, "-c", wrapped, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


WRITE_OURS = """
import sys, time
from ltvl.vl.data.synthetic import Shape, make_synthetic
t = time.perf_counter()
info = make_synthetic("vqa", sys.argv[1], int(sys.argv[2]), 256, train_images=int(sys.argv[2]), test_images=256,
                      shape=Shape(regions=36, feat_dim=2048, pixels=False))
RESULT = {"s": time.perf_counter() - t, "bytes": info.total_bytes}
"""

WRITE_PLAIN = """
import sys, time, os
import numpy as np, pyarrow as pa
import ltvl.vl.data.synthetic as S
from ltvl.vl.data.writer import large_list
# the same generator's batches, handed to a bare pyarrow IPC file writer
n, chunk, out = int(sys.argv[2]), 2048, sys.argv[1]
os.makedirs(out, exist_ok=True)
t = time.perf_counter()
pool = S._noise_pool(2048, 0)
schema = pa.schema([("image_id", pa.int64()), ("num_regions", pa.int32()), ("features", pa.large_list(pa.float16())),
                    ("boxes", pa.large_list(pa.float32())), ("region_labels", pa.large_list(pa.int32()))])
class Capture:
    def write(self, ids, feats, boxes, nreg, images, labels):
        m, r, d = feats.shape
        w.write_batch(pa.record_batch([pa.array(np.asarray(ids, np.int64)), pa.array(np.full(m, r, np.int32)),
            large_list(feats.reshape(-1), np.full(m, r * d), pa.float16()),
            large_list(boxes.reshape(-1), np.full(m, r * 7), pa.float32()),
            large_list(labels.astype(np.int32).reshape(-1), np.full(m, r), pa.int32())], schema=schema))
with pa.OSFile(out + "/images.arrow", "wb") as sink, pa.ipc.new_file(sink, schema) as w:
    for c in range(-(-n // chunk)):
        rng = np.random.default_rng([0, 0, c])
        i0, i1 = c * chunk, min(n, (c + 1) * chunk)
        colours, _ = S._vqa_chunk(i0, i1, n, n, rng)
        S._write_images(Capture(), np.arange(i0, i1), colours, rng, S.Shape(36, 2048, pixels=False), pool)
    sink.flush(); os.fsync(sink.fileno())
RESULT = {"s": time.perf_counter() - t, "bytes": os.path.getsize(out + "/images.arrow")}
"""

OPEN = """
import sys, time, os
from pathlib import Path
if sys.argv[2] == "cold":
    for p in Path(sys.argv[1]).rglob("*.arrow"):
        fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
t = time.perf_counter()
from ltvl.vl.data.store import open_split
s = open_split(sys.argv[1], "train")
b = s.images.batch(s.examples["image_id"].to_numpy()[:32])
RESULT = {"s": time.perf_counter() - t, "shape": list(b["features"].shape)}
"""

READ_ALL = """
import sys, time, re
import numpy as np
from ltvl.vl.data.store import open_split
s = open_split(sys.argv[1], "train")
ids = np.random.default_rng(int(sys.argv[2])).permutation(s.images.image_ids)
t = time.perf_counter()
for k in range(0, len(ids), 64):
    s.images.batch(ids[k:k + 64])
import os, pathlib
barrier = pathlib.Path(sys.argv[3])  # measure only when every reader has read everything and still holds the map
(barrier / sys.argv[2]).touch()
while len(list(barrier.iterdir())) < int(sys.argv[4]):
    time.sleep(0.2)
roll = open("/proc/self/smaps_rollup").read()
kb = lambda f: int(re.search(rf"^{f}:\\s+(\\d+)", roll, re.M).group(1)) * 1024
RESULT = {"s": time.perf_counter() - t, "rss": kb("Rss"), "pss": kb("Pss"), "anon": kb("Anonymous")}
"""

STREAM = """
import sys, time
import numpy as np
from ltvl.vl.data.store import open_split
s = open_split(sys.argv[1], "train")
im = s.images
rng = np.random.default_rng(0)
ids = rng.choice(im.image_ids, 64 * 200)
im.batch(ids[:64])
t = time.perf_counter()
for k in range(0, len(ids), 64):
    im.batch(ids[k:k + 64])
ours = len(ids) / (time.perf_counter() - t)
# ceiling: copy the same bytes (each image's 36 x 2048 fp16 block) out of the same memory map
vals, offs = im._feats.values[0], im._feats.offsets[0]
rows = rng.integers(0, len(offs) - 1, len(ids))
out = np.empty((64, 36 * 2048), np.float16)
t = time.perf_counter()
for k in range(0, len(rows), 64):
    for i, r in enumerate(rows[k:k + 64]):
        out[i] = vals[offs[r]:offs[r + 1]]
ceiling = len(rows) / (time.perf_counter() - t)
RESULT = {"ours": ours, "ceiling": ceiling}
"""


def imp_peak(data: str, root: str) -> dict:
    t = time.perf_counter()
    cmd = [sys.executable, "-c", "import resource, sys\nfrom ltvl.cli import main\nsys.argv = ['ltvl'] + sys.argv[1:]\n"
           "try:\n    main()\nfinally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)",
           "imp", "--data", data, "--steps", "2", "--batch-size", "32", "--eval-limit", "64",
           "--target-sparsity", "0.5", "--root", root]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LTVL_HOME": root})
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return {"peak_rss": int(re.search(r"PEAK (\d+)", out.stdout).group(1)), "s": time.perf_counter() - t}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--dir", default="/tmp/ltvl-bench")
    ap.add_argument("--keep", action="store_true", help="keep the written dataset")
    a = ap.parse_args()
    root = Path(a.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    big, plain, small = str(root / "big"), str(root / "plain"), str(root / "small")
    print(f"machine: {machine()}\nimages: {a.images:,} x 36 x 2048 fp16", flush=True)

    base = child(WRITE_PLAIN, plain, str(a.images))
    shutil.rmtree(plain)
    ours = child(WRITE_OURS, big, str(a.images))
    print(f"write: ltvl {ours['s']:.1f} s, peak RSS {gb(ours['peak_rss'])}, {gb(ours['bytes'])} | plain pyarrow "
          f"{base['s']:.1f} s ({gb(base['bytes'])}, peak {gb(base['peak_rss'])}) | ratio {ours['s'] / base['s']:.2f}",
          flush=True)

    warm, cold = child(OPEN, big, "warm"), child(OPEN, big, "cold")
    print(f"open + first batch: warm {warm['s']:.2f} s, cold {cold['s']:.2f} s", flush=True)

    (root / "b1").mkdir(), (root / "b4").mkdir()
    one = child(READ_ALL, big, "0", str(root / "b1"), "1")
    procs = [subprocess.Popen([sys.executable, "-c", READ_ALL + "\nimport json\nprint(json.dumps(RESULT))", big,
                               str(k), str(root / "b4"), "4"], stdout=subprocess.PIPE, text=True) for k in range(4)]
    four = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    print(f"share: one process PSS {gb(one['pss'])} (RSS {gb(one['rss'])}, private {gb(one['anon'])}); four at "
          f"once: total PSS {gb(sum(f['pss'] for f in four))} = {sum(f['pss'] for f in four) / one['pss']:.2f}x one, "
          f"total private {gb(sum(f['anon'] for f in four))}, total RSS {gb(sum(f['rss'] for f in four))}",
          flush=True)

    st = child(STREAM, big)
    print(f"stream: {st['ours']:.0f} examples/s per core vs memcpy ceiling {st['ceiling']:.0f} "
          f"({st['ours'] / st['ceiling']:.2f}); feeds {st['ours'] / 32:.1f} steps/s of batch 32 per worker core",
          flush=True)

    child(WRITE_OURS, small, "600")
    small_run = imp_peak(small, str(root / "home-small"))
    big_run = imp_peak(big, str(root / "home-big"))
    print(f"imp --steps 2: peak RSS {gb(big_run['peak_rss'])} on {a.images:,} images vs {gb(small_run['peak_rss'])} "
          f"on 600 images: data costs {gb(big_run['peak_rss'] - small_run['peak_rss'])} "
          f"({big_run['s']:.0f} s vs {small_run['s']:.0f} s)", flush=True)
    if not a.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
