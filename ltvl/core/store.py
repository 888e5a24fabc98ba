"""The shared shape of every content-addressed store (chain, dense run, ticket chain).

A spec names its directory by the sha256 of its identity (:mod:`ltvl.core.identity`). Opening a
store writes ``spec.json`` once and refuses a directory that holds another spec. A directory
written by an older format is found by what its spec *means*, and used in place under the hash
it was written with, so its records, masks and MLflow keys stay valid and nothing is orphaned.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from ltvl.core.identity import FORMAT, identity, identity_from_format0, identity_sha256, spec_document, to_json
from ltvl.util.atomic import atomic_write_text, json_sha256
from ltvl.util.errors import LtvlError

_STORE_NAME = re.compile(r"^[0-9a-f]{16}$")


class Spec:
    """Mixin for frozen spec dataclasses: identity hash and JSON form."""

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @property
    def sha256(self) -> str:
        return identity_sha256(self)

    @property
    def short_hash(self) -> str:
        return self.sha256[:16]


def locate(parent: Path, spec: Any) -> tuple[str, Path, int]:
    """(identity sha256, directory, format) of ``spec``'s store under ``parent``: the current
    format's directory if it exists, else an older-format directory holding the same spec."""
    sha = identity_sha256(spec)
    current = parent / sha[:16]
    if current.exists() or not parent.is_dir():
        return sha, current, FORMAT
    want = identity(spec)
    for cand in sorted(parent.iterdir()):
        f = cand / "spec.json"
        if not (_STORE_NAME.match(cand.name) and f.is_file()):
            continue
        raw = json.loads(f.read_text())
        if "format" not in raw and identity_from_format0(raw, type(spec)) == want:
            return json_sha256(raw), cand, 0
    return sha, current, FORMAT


RECORD_FORMAT = 2  # records carry record_sha256 over the rest of their content (2026-12; earlier ones do not)
DAMAGED_FIX = "delete this store's directory to recompute it (ltvl writes atomically: damage came from elsewhere)"


def write_record(path: str | Path, doc: dict[str, Any]) -> None:
    """Write a store record sealed by the sha256 of its content, so an edit or damage is caught on reading."""
    body = {**doc, "record_format": RECORD_FORMAT}
    atomic_write_text(path, json.dumps({**body, "record_sha256": json_sha256(body)}, indent=2, sort_keys=True))


def read_record(path: str | Path, fix: str = DAMAGED_FIX) -> dict[str, Any]:
    """A record written by :func:`write_record` (or an older, unsealed one), checked against its hash;
    anything unreadable or edited is an :class:`LtvlError` naming the file, never a traceback."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise LtvlError(f"store record is unreadable ({type(e).__name__}: {e})", where=str(path), fix=fix) from None
    if not isinstance(doc, dict):
        raise LtvlError(f"store record is a JSON {type(doc).__name__}, not an object", where=str(path), fix=fix)
    sha = doc.pop("record_sha256", None)
    if sha is None:
        if doc.get("record_format", 0) >= RECORD_FORMAT:  # a current record cannot drop its hash
            raise LtvlError(f"the record has no record_sha256, which every record_format {RECORD_FORMAT} file "
                            "carries", where=str(path), fix=fix)
        return doc  # written before records were sealed: read as it is
    if json_sha256(doc) != sha:
        raise LtvlError("the record was edited or damaged after it was written (its content does not match its "
                        "record_sha256)", where=str(path), fix=fix)
    doc.pop("record_format", None)
    return doc


def record_from(cls, path: str | Path, doc: dict[str, Any]):
    """Build ``cls`` from a record's fields; a missing or unknown field names the file."""
    try:
        return cls(**doc)
    except TypeError as e:
        raise LtvlError(f"store record does not hold a {cls.__name__} ({e})", where=str(path),
                        fix=DAMAGED_FIX) from None


class Record:
    """Mixin for the records a store keeps per round: written with the format version, read back
    (``replayed``) from any format. ``RENAMED`` maps older field names to current ones."""

    RENAMED: dict[str, str] = {}

    def record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("replayed")
        return {"format": FORMAT, **d}

    @classmethod
    def from_record(cls, rec: dict[str, Any], path: str | Path = "?"):
        d = {cls.RENAMED.get(k, k): v for k, v in rec.items() if k != "format"}
        return record_from(cls, path, {**d, "replayed": True})


class SpecStore:
    """A directory named by its spec; ``writer=False`` (DDP ranks other than 0) never writes."""

    kind = "store"

    def __init__(self, parent: str | Path, spec: Any, writer: bool = True):
        self.spec, self.writer = spec, writer
        self.sha256, self.dir, self.format = locate(Path(parent), spec)

    @property
    def short_hash(self) -> str:
        return self.dir.name

    def open(self) -> None:
        f = self.dir / "spec.json"
        if f.exists():
            doc = read_record(f, fix="use another root directory, or delete this one to recompute it")
            if doc.get("format", 0) >= 1 and doc.get("identity") != json.loads(json.dumps(identity(self.spec))):
                raise LtvlError(f"{self.kind} directory holds a different spec (hash prefix collision?)",
                                where=str(self.dir), fix="use a different root directory")
        elif self.writer:
            atomic_write_text(f, json.dumps(spec_document(self.spec), indent=2, sort_keys=True))
