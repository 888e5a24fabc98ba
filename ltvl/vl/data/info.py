"""``dataset.json``: what a model needs to know before it sees a batch, the format version,
and a manifest of every file (size + sha256) so truncation and corruption are caught by name."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltvl.util.atomic import atomic_write_text, json_sha256
from ltvl.util.errors import LtvlError
from ltvl.util.safepath import HEX64

FORMAT = 1  # 0: Parquet with list<> columns (ltvl <= 0.1, before issue 13); 1: Arrow IPC, 64-bit offsets
MIGRATE_HINT = ("convert it with `ltvl data migrate {dir} --out NEW_DIR` "
                "(or delete it: ltvl re-prepares its own datasets)")


@dataclass
class DatasetInfo:
    task: str
    feat_dim: int
    num_regions: int  # the most regions any image has (images keep only their own)
    answers: list[str] = field(default_factory=list)  # VQA/GQA-style answer vocabulary
    num_labels: int | None = None
    image_size: int | None = None  # side of the square pixel input ViLT gets, when images are stored
    source: str = ""
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    format: int = FORMAT
    min_regions: int | None = None
    # Text stored as word-piece ids (UNITER txt_db): whose vocabulary, its special ids, and the
    # tokens the task adds to it (VCR's 81 person tags: ``extra_tokens``).
    tokenizer: dict | None = None
    # region_labels index this many classes: the 1,600 Visual Genome object classes, 0-based, the
    # detector's background class excluded (UNITER's soft-label column 0; LXMERT's objects_id as is)
    region_classes: int | None = None
    soft_label_dim: int | None = None  # width of region_soft_labels (UNITER: 1,601, background first): MRC-kl
    unlabelled: list[str] = field(default_factory=list)  # splits published without labels: no metric, no training
    import_log: list[str] = field(default_factory=list)  # what the import skipped or changed, with counts
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> {"bytes", "sha256"}
    content_sha256: str = ""  # hash of the manifest: names the dataset in caches

    def seal(self) -> None:
        """Fix the content hash from the manifest and the model-facing fields."""
        d = asdict(self)
        d.pop("content_sha256")
        self.content_sha256 = json_sha256(d)

    def save(self, directory: str | Path) -> None:
        atomic_write_text(Path(directory) / "dataset.json", json.dumps(asdict(self), indent=2))

    @property
    def total_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files.values())

    @classmethod
    def load(cls, directory: str | Path) -> DatasetInfo:
        directory = Path(directory)
        p = directory / "dataset.json"
        if not p.exists():
            raise LtvlError("not a dataset directory (no dataset.json)", where=str(directory),
                            fix="prepare one with `ltvl data prepare easy-vqa --out DIR`, `ltvl data synth`, "
                                "or `ltvl data import` (docs/guide/data.md)")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LtvlError(f"not valid JSON ({e})", where=str(p), fix="re-import the dataset") from e
        if not isinstance(d, dict):
            raise LtvlError("must hold a JSON object", where=str(p))
        if "format" not in d:
            raise LtvlError("this dataset is in ltvl's old Parquet layout (format 0), which the loader no longer "
                            "reads", where=str(directory), fix=MIGRATE_HINT.format(dir=directory))
        if d["format"] != FORMAT:
            raise LtvlError(f"dataset format {d['format']} is not {FORMAT}, the one this ltvl reads",
                            where=f"{p} format", fix="use the ltvl version that wrote it, or re-import")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LtvlError(f"unknown keys {sorted(unknown)}", where=str(p))
        check_fields(d, str(p))
        check_sealed(d, str(p))
        return cls(**d)


# dataset.json's keys: their JSON types (None allowed where listed) and whether they must be there
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "task": ((str,), True), "feat_dim": ((int,), True), "num_regions": ((int,), True),
    "answers": ((list,), False), "num_labels": ((int, type(None)), False),
    "image_size": ((int, type(None)), False), "source": ((str,), False), "splits": ((list,), False),
    "format": ((int,), True), "min_regions": ((int, type(None)), False), "tokenizer": ((dict, type(None)), False),
    "region_classes": ((int, type(None)), False), "soft_label_dim": ((int, type(None)), False),
    "unlabelled": ((list,), False), "import_log": ((list,), False), "files": ((dict,), False),
    "content_sha256": ((str,), False)}
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILE_NAMES = ("images.arrow", "examples.arrow")


def check_fields(d: dict, where: str) -> None:
    """Every key of dataset.json has its type, and the manifest names only ltvl's own files
    (``<split>/images.arrow``, ``<split>/examples.arrow``) with a size and a sha256: a file from
    elsewhere can never name a place outside the dataset."""
    for key, (types, required) in _FIELDS.items():
        if key not in d:
            if required:
                raise LtvlError(f"lacks the key {key!r}", where=where, fix="re-import the dataset")
            continue
        v = d[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise LtvlError(f"{key} is {type(v).__name__} {v!r:.80}, expected "
                            f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}",
                            where=f"{where} {key}", fix="re-import the dataset")
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise LtvlError(f"{key} is negative ({v})", where=f"{where} {key}", fix="re-import the dataset")
    for key in ("answers", "splits", "unlabelled", "import_log"):
        if not all(isinstance(x, str) for x in d.get(key, [])):
            raise LtvlError(f"{key} must be a list of strings", where=f"{where} {key}", fix="re-import the dataset")
    bad = [s for s in d.get("splits", []) if not SPLIT_NAME.match(s)]
    if bad:
        raise LtvlError(f"split name {bad[0]!r} is not a plain name", where=f"{where} splits",
                        fix="letters, digits, '.', '_' and '-'")
    for rel, meta in d.get("files", {}).items():
        split, _, name = rel.partition("/")
        if split not in d.get("splits", ["train", "test"]) or name not in FILE_NAMES:
            raise LtvlError(f"the manifest names {rel!r}, which is not one of ltvl's files (<split>/images.arrow, "
                            "<split>/examples.arrow)", where=f"{where} files", fix="re-import the dataset")
        if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int) and not isinstance(meta["bytes"], bool)
                and meta["bytes"] >= 0 and isinstance(meta.get("sha256"), str) and HEX64.match(meta["sha256"])):
            raise LtvlError(f"the manifest entry of {rel!r} needs bytes (an integer) and sha256 (64 hex digits)",
                            where=f"{where} files", fix="re-import the dataset")


def check_sealed(d: dict, where: str) -> None:
    """The content hash is what identifies the dataset everywhere (caches, dense runs): it must
    still be the hash of what dataset.json says. An edit (answers reordered, a label renamed) is
    a different dataset under the same name, and is refused."""
    sha = d.get("content_sha256", "")
    if not isinstance(sha, str) or not HEX64.match(sha):
        raise LtvlError("dataset.json has no content hash (content_sha256)", where=where,
                        fix="re-import the dataset (every format-1 dataset ltvl writes is sealed)")
    if json_sha256({k: v for k, v in d.items() if k != "content_sha256"}) != sha:
        raise LtvlError("dataset.json was changed after it was written: its content no longer has the hash it "
                        "was sealed with", where=where,
                        fix="re-import (or re-prepare) the dataset; an edit is a new dataset and needs a new seal")
