"""Load a published state dict into a backbone by the reference code's names, and say what happened.

- UNITER (ChenRocks/UNITER ``utils/save.py``: ``torch.save`` of the pre-training model's state
  dict): ``uniter.*`` is the backbone (our module names are UNITER's without the prefix); the
  pre-training heads ``cls.*``, ``feat_regress.*``, ``region_classifier.*``, ``itm_output.*`` and
  MRM's ``img_embeddings.mask_embedding`` are dropped, listed once as such.
- BERT (θ'0, or a UNITER-style backbone's text side): ``bert.*`` or bare ``embeddings.*`` /
  ``encoder.*`` / ``pooler.*``, with ``LayerNorm.gamma/beta`` read as weight/bias.
- LXMERT as airsplay/lxmert saves it (``model_LXRT.pth``, ``bert.*`` over the same module tree as
  transformers' ``LxmertModel``, ``module.`` under DataParallel).

A tensor the backbone needs and the checkpoint lacks is an error unless ``allow_missing`` (a
regex) names it; a tensor whose shape differs is always an error. Layers above ``num_layers``
are left out on purpose and counted as such.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.models.checkpoint import HEAD_PREFIXES, KIND_NAMES, head_groups

_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")
_BUFFERS = ("position_ids", "token_type_ids")  # derived buffers, never published weights


@dataclass
class LoadReport:
    """What a load did, in counts a researcher can check at a glance."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # allowed by allow_missing: freshly initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, in no module and no known head
    dropped_heads: list[str] = field(default_factory=list)  # pre-training / task heads of the published file
    dropped_layers: list[str] = field(default_factory=list)  # above num_layers, on purpose
    fresh: list[str] = field(default_factory=list)  # parts the checkpoint's model does not have (BERT: images)

    def line(self) -> str:
        parts = [f"{self.source}: {KIND_NAMES.get(self.kind, self.kind)} checkpoint, loaded {len(self.loaded)}, "
                 f"missing {len(self.missing)}, unexpected {len(self.unexpected)}"]
        if self.missing:
            parts.append(f"allowed missing (freshly initialised): {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected (ignored): {_short(self.unexpected)}")
        if self.dropped_heads:
            parts.append(f"dropped heads: {head_groups(self.dropped_heads)}")
        if self.dropped_layers:
            parts.append(f"{len(self.dropped_layers)} tensors of layers above num_layers left out")
        if self.fresh:
            parts.append(f"not part of a {KIND_NAMES.get(self.kind, self.kind)} model, freshly initialised: "
                         f"{head_groups(self.fresh)}")
        return "; ".join(parts)

    def counts(self) -> dict[str, int]:
        return {"loaded": len(self.loaded), "missing": len(self.missing), "unexpected": len(self.unexpected),
                "dropped_heads": len(self.dropped_heads), "dropped_layers": len(self.dropped_layers)}


def _short(names: list[str], n: int = 6) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" … (+{len(names) - n})" if len(names) > n else "")


def allowed(pattern: str | None, where: str = "allow_missing") -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise LtvlError(f"invalid regex {pattern!r}: {e}", where=where, fix="e.g. allow_missing: 'pooler\\.'") from e


def check_missing(report: LoadReport, allow_missing: str | None, where: str) -> None:
    """A backbone tensor the checkpoint lacks would silently start random: refuse it unless allowed."""
    rx = allowed(allow_missing)
    refused = [n for n in report.missing if not (rx and rx.search(n))]
    if refused:
        raise LtvlError(
            f"the checkpoint lacks {len(refused)} backbone tensor(s) the model needs: {_short(refused)}",
            where=where,
            fix="pass the complete checkpoint; if starting these from random is what you want, set "
                f"allow_missing to a regex that names them (e.g. allow_missing: '{_pattern_hint(refused)}')")


def _pattern_hint(names: list[str]) -> str:
    stems = sorted({n.rsplit(".", 2)[0] for n in names})
    return re.escape(stems[0]) + r"\." if len(stems) == 1 else "|".join(re.escape(s) for s in stems[:2])


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def load_state(module: nn.Module, body: Mapping[str, torch.Tensor], report: LoadReport,
               num_layers: int | None = None, required: re.Pattern | None = None) -> LoadReport:
    """Copy ``body`` (names relative to ``module``) into ``module``. ``required`` limits which of the
    module's tensors count as missing (θ'0 from BERT: the text side only; the rest is ``fresh``)."""
    own = module.state_dict()
    take = {}
    for name, t in body.items():
        if name.endswith(_BUFFERS):
            continue
        if name not in own:
            n = layer_of(name)
            if num_layers is not None and n is not None and n >= num_layers:
                report.dropped_layers.append(name)
            else:
                report.unexpected.append(name)
            continue
        if tuple(t.shape) != tuple(own[name].shape):
            raise LtvlError(f"'{name}' has shape {list(t.shape)} in the checkpoint, the model's is "
                            f"{list(own[name].shape)}", where=report.source,
                            fix="the checkpoint is another size of this model: pick the matching preset, or set "
                                "custom_size: true for a non-published size")
        take[name] = t
    for name in own:
        if name in take or name.endswith(_BUFFERS):
            continue
        if required is not None and not required.search(name):
            report.fresh.append(name)
        else:
            report.missing.append(name)
    with torch.no_grad():
        for name, t in take.items():
            own[name].copy_(t.to(own[name].dtype))
    report.loaded.extend(take)
    return report


def uniter_body(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """UNITER-repo names -> UniterBackbone names; heads and MRM's mask embedding are dropped."""
    report = LoadReport(source, "uniter")
    if not any(k.startswith("uniter.") for k in state):
        raise LtvlError("no 'uniter.*' tensors in the checkpoint", where=source,
                        fix="pass an official UNITER checkpoint, or a BERT-architecture checkpoint for BERT init")
    body = {}
    for k, v in state.items():
        if k.startswith("uniter.img_embeddings.mask_embedding"):
            report.dropped_heads.append(k)
        elif k.startswith("uniter."):
            body[k[len("uniter."):]] = v
        else:
            report.dropped_heads.append(k)  # cls, feat_regress, region_classifier, itm_output, task heads
    return body, report


def bert_body(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """A BERT checkpoint's encoder by BERT's names: ``bert.*`` (BertForPreTraining) or bare
    (BertModel); ``cls.*`` heads are dropped."""
    report = LoadReport(source, "bert")
    prefixed = any(k.startswith("bert.") for k in state)
    body = {}
    for k, v in state.items():
        if prefixed and k.startswith("bert."):
            body[k[len("bert."):]] = v
        elif k.startswith(("embeddings.", "encoder.", "pooler.")) and not prefixed:
            body[k] = v
        else:
            report.dropped_heads.append(k)
    return body, report


def airsplay_lxmert_body(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict, LoadReport]:
    """airsplay/lxmert's ``*_LXRT.pth``: ``[module.]bert.*`` is transformers' ``LxmertModel``."""
    report = LoadReport(source, "lxmert")
    body = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        for prefix in ("bert.", "lxmert."):
            if k.startswith(prefix):
                body[k[len(prefix):]] = v
                break
        else:
            report.dropped_heads.append(k)
    return body, report


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextmanager
def quiet_load_report():
    """transformers 5 logs a table of every unexpected key at WARNING; truncating to N layers makes
    the dropped layers 'unexpected' on every model build, which floods job logs. ltvl turns the
    loading info into its own :class:`ltvl.vl.models.convert.LoadReport` (counts, dropped heads,
    and an error for a missing tensor). (A filter, not a level: transformers runs extra checks
    when its logger's level is raised.)"""
    lg = logging.getLogger("transformers.modeling_utils")
    lg.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        lg.removeFilter(_not_a_load_report)


def from_pretrained(cls, directory: str, kind: str, num_layers: int | None = None,
                    allow_missing: str | None = None, **kw):
    """transformers' ``cls.from_pretrained`` on a local directory (it reads .safetensors and, with
    ``weights_only``, .bin), with its loading info turned into a :class:`LoadReport`: a missing
    tensor is an error unless allowed, a shape that differs always, and any failure to read names
    the directory instead of a traceback."""
    if num_layers:
        kw["num_hidden_layers"] = num_layers
    try:
        with quiet_load_report():
            model, info = cls.from_pretrained(directory, output_loading_info=True, **kw)
    except LtvlError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means the files are not a loadable model
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise LtvlError(f"cannot load the checkpoint ({type(e).__name__}: {first})", where=directory,
                        fix="the files are truncated, corrupt or of another model: download them again") from e
    report = LoadReport(directory, kind)
    for k in sorted(map(str, info.get("unexpected_keys", ()))):
        n = layer_of(k)
        if num_layers and n is not None and n >= num_layers:
            report.dropped_layers.append(k)
        elif k.startswith(HEAD_PREFIXES.get(kind, ())):
            report.dropped_heads.append(k)
        else:
            report.unexpected.append(k)
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys", ())]
    if mismatched:
        raise LtvlError(f"{len(mismatched)} tensor(s) have another shape than the model's: {_short(mismatched)}",
                        where=directory, fix="config.json and the weights disagree: restore the pair")
    report.missing = sorted(map(str, info.get("missing_keys", ())))
    report.loaded = [k for k in model.state_dict() if k not in set(report.missing) and not k.endswith(_BUFFERS)]
    check_missing(report, allow_missing, directory)
    return model, report
