"""``dataset.json``: what a model needs to know before it sees a batch, the format version,
and a manifest of every file (size + sha256) so truncation and corruption are caught by name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltvl.util.atomic import atomic_write_text, json_sha256
from ltvl.util.errors import LtvlError

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
                                "or `ltvl data import` (README 'Data')")
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
        return cls(**d)
