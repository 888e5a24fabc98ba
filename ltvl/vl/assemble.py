"""Assemble a VL experiment from names: task + dataset directory + backbone preset.

Returns what the core needs — a deterministic model factory (θ0), a TrainTask, and the
preset's prunable set — after checking every combination *before* any training starts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltvl.pruning.prunable import PrunableSpec
from ltvl.util.errors import LtvlError
from ltvl.util.home import home
from ltvl.vl.data.store import DatasetInfo, open_split
from ltvl.vl.data.tokens import PrepCache, check_tokenizer
from ltvl.vl.data.verify import check_values
from ltvl.vl.models.base import bert_init_
from ltvl.vl.models.presets import BackboneSpec, build_backbone, check_pooling, get_preset, load_tokenizer
from ltvl.vl.tasks import TaskData, VLModel, get_task


@dataclass(frozen=True)
class VLSpec:
    # Identity anchors: a store's hash covers only fields that differ from these defaults, so they are
    # never changed. Users never see them: the defaults users get are the parameter schema's
    # (ltvl/params/schema.py, docs/reference/parameters.md), which resolve_chain passes in full.
    task: str = "vqa"
    data: str = ""  # dataset directory (dataset.json + splits)
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    train_split: str = "train"
    eval_split: str = "test"
    max_len: int = 24
    eval_limit: int | None = None  # evaluate on the first N eval examples (None = all)
    eval_batch_size: int = 256
    loader_workers: int | None = None  # DataLoader workers (None: auto, 0 on CPU); never changes results
    head_checkpoint: str | None = None  # optional trained head (safetensors)
    objectives: tuple[str, ...] | None = None  # pretrain only; default: all (ViLT: mlm + itm)


@dataclass
class VLSetup:
    spec: VLSpec
    info: DatasetInfo
    data: TaskData
    model_factory: Callable[[], VLModel]
    prunable: PrunableSpec


def build_vl(spec: VLSpec) -> VLSetup:
    if not spec.data:
        raise LtvlError("no dataset directory given", where="data", fix="e.g. data=~/.ltvl/data/easy-vqa")
    preset = get_preset(spec.backbone.preset)
    check_pooling(spec.backbone.preset, spec.backbone.pooling, "params.pooling")
    task = get_task(spec.task, **_task_options(spec, preset.reads_regions))
    data_dir = Path(spec.data).expanduser()
    info = DatasetInfo.load(data_dir)
    if info.task != spec.task and not (spec.task == "pretrain" and info.task in ("flickr30k", "pretrain")):
        raise LtvlError(
            f"dataset {data_dir} is a {info.task!r} dataset, not {spec.task!r}",
            where="data",
            fix="point data at a dataset prepared for this task",
        )
    if info.feat_dim == 0 and preset.reads_regions:
        raise LtvlError(
            f"dataset {data_dir} holds images only (no region features), but preset {spec.backbone.preset!r} "
            "reads detector regions",
            where="params.preset",
            fix="use a ViLT preset (vilt-base, vilt-tiny), or import region features (--format uniter or lxmert)",
        )
    if task.needs_regions and not preset.reads_regions:
        raise LtvlError(
            f"task {spec.task!r} scores detector regions; ViLT has patches, not regions",
            where="params.preset",
            fix="use a region backbone (uniter/lxmert presets)",
        )
    for role, split in (("trains on", spec.train_split), ("is scored on", spec.eval_split)):
        if split in info.unlabelled:
            raise LtvlError(
                f"split {split!r} of {data_dir} was published without labels (e.g. VQA/GQA test, VCR test): a chain "
                f"{role} labelled examples only", where=f"{data_dir}/dataset.json unlabelled",
                fix="import a labelled split for training and scoring (e.g. GQA testdev, VQA minival) and predict "
                    "the unlabelled one elsewhere")
    train, evaluation = (
        open_split(data_dir, spec.train_split, spec.task),
        open_split(data_dir, spec.eval_split, spec.task),
    )
    check_values(data_dir, info)  # nan / inf anywhere: once per node per dataset (cached)
    tokenizer = load_tokenizer(spec.backbone)
    check_tokenizer(info.tokenizer, tokenizer, spec.backbone.preset, str(data_dir / "dataset.json"))
    data = TaskData(task, train, evaluation, tokenizer, spec.max_len, spec.eval_batch_size, spec.eval_limit,
                    spec.loader_workers, prep_cache=PrepCache(home() / "cache" / "prep"))
    cache: dict[str, VLModel] = {}

    def factory() -> VLModel:
        """θ0: built once (seeded), then deep-copied, so every call is identical and cheap."""
        if "m" not in cache:
            backbone = build_backbone(spec.backbone, info)
            extra = (info.tokenizer or {}).get("extra_tokens", 0)
            if extra:  # VCR's person tags: UNITER's init_word_embedding, new rows drawn as BERT's init
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(spec.backbone.seed + 2)
                    backbone.add_word_embeddings(extra)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.backbone.seed + 1)
                head = task.build_head(backbone.hidden_size, info)
                bert_init_(head, 0.02)
            model = VLModel(backbone, head, task)
            if spec.head_checkpoint:
                load_head(model, spec.head_checkpoint, info)
            cache["m"] = model
        return copy.deepcopy(cache["m"])

    return VLSetup(spec, info, data, factory, preset.prunable)


def _task_options(spec: VLSpec, reads_regions: bool) -> dict:
    if spec.task != "pretrain":
        if spec.objectives:
            raise LtvlError("objectives apply only to task 'pretrain'", where="objectives", fix="remove it")
        return {}
    from ltvl.vl.tasks.pretrain import OBJECTIVES

    region = {"mrfr", "mrc"}
    if spec.objectives is None:  # ViLT has patches, not detector regions: pre-trained with MLM + ITM
        return {"objectives": tuple(o for o in OBJECTIVES if reads_regions or o not in region)}
    if not reads_regions and region & set(spec.objectives):
        raise LtvlError(
            f"objectives {sorted(region & set(spec.objectives))} need detector regions; ViLT has patches",
            where="objectives",
            fix="use objectives=[mlm, itm] with ViLT",
        )
    return {"objectives": tuple(spec.objectives)}


def load_head(model: VLModel, path: str, info: DatasetInfo) -> None:
    from ltvl.util.weights import load_safetensors

    state = load_safetensors(path, where="head_checkpoint")
    own = model.head.state_dict()
    for k, v in own.items():
        if k not in state:
            raise LtvlError(f"head checkpoint lacks '{k}'", where=str(path))
        if tuple(state[k].shape) != tuple(v.shape):
            n_out = state[k].shape[0]
            raise LtvlError(
                f"head tensor '{k}' has shape {list(state[k].shape)}, the model needs {list(v.shape)}"
                + (
                    f": the checkpoint's head has {n_out} outputs but the answer vocabulary has "
                    f"{len(info.answers)} answers"
                    if info.answers and v.shape[0] == len(info.answers)
                    else ""
                ),
                where=str(path),
                fix="use the dataset the head was trained with, or drop head_checkpoint",
            )
    model.head.load_state_dict(state)
