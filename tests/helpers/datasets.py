"""Datasets ltvl wrote, changed the way a buggy writer would have written them: the edit is
sealed again (a new content hash), so the checks that come after the seal's are what is tested."""

from __future__ import annotations

import json
from pathlib import Path

from ltvl.util.atomic import json_sha256


def rewrite_dataset_json(directory: Path, **changes) -> dict:
    """Apply ``changes`` to dataset.json and seal it again; returns the new document."""
    p = Path(directory) / "dataset.json"
    doc = json.loads(p.read_text())
    doc.update(changes)
    doc.pop("content_sha256", None)
    doc["content_sha256"] = json_sha256(doc)
    p.write_text(json.dumps(doc))
    return doc
