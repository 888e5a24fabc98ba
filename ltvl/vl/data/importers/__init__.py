"""Importers from the formats the paper's data is published in (``ltvl data import FORMAT``).

- ``uniter``: UNITER's LMDB ``img_db`` (region features) + ``txt_db`` (word-piece ids, labels).
- ``lxmert``: LXMERT's TSV region features + its JSON question files.
- ``vilt``: ViLT's Arrow files (encoded images + questions/captions).
"""

from __future__ import annotations

FORMATS = {
    "uniter": "UNITER LMDB img_db + txt_db (VQA, SNLI-VE, NLVR2, VCR, RefCOCO+, Flickr30k)",
    "lxmert": "LXMERT TSV features + JSON questions (VQA, GQA, NLVR2)",
    "vilt": "ViLT Arrow files with encoded images (VQA, GQA, NLVR2, Flickr30k)",
}
