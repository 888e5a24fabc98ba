"""What a checkpoint on disk *is*, read without trusting it: its files, its tensors, its model
type, its architecture and its content hash.

Published checkpoints come in the layouts the reference code writes:

- UNITER (ChenRocks/UNITER): one ``.pt`` file, ``torch.save`` of a plain state dict with names
  ``uniter.*`` plus the pre-training heads (``cls.*``, ``feat_regress.*``,
  ``region_classifier.*``, ``itm_output.*``); no config (``config/uniter-base.json`` lives in
  the repository: 12 x 768, 12 heads, vocabulary 28,996, bert-base-cased).
- transformers (BERT, LXMERT, ViLT): a directory with ``config.json`` and ``model.safetensors``
  or ``pytorch_model.bin`` (or their sharded ``*.index.json``), names with or without the
  base-model prefix (``bert.``, ``lxmert.``, ``vilt.``), older files with ``LayerNorm.gamma/beta``.

Nothing here unpickles code: ``.bin``/``.pt`` go through ``torch.load(weights_only=True)``.
Every failure is an :class:`LtvlError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError

SAFETENSORS, BIN = "model.safetensors", "pytorch_model.bin"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
KINDS = ("uniter", "bert", "lxmert", "vilt")
KIND_NAMES = {"uniter": "UNITER", "bert": "BERT", "lxmert": "LXMERT", "vilt": "ViLT"}
# Heads the published files carry beside the backbone: dropped on load, listed once as such.
HEAD_PREFIXES = {
    "uniter": ("cls.", "feat_regress.", "region_classifier.", "itm_output.", "vqa_output.", "nlvr2_output.",
               "vcr_output.", "re_output.", "rank_output.", "ot_"),
    "bert": ("cls.",),
    "lxmert": ("cls.", "obj_predict_head.", "answer_head."),
    "vilt": ("mlm_score.", "itm_score.", "mpp_score.", "classifier."),
}


def _where(path: Path) -> str:
    return str(path)


@dataclass(frozen=True)
class CheckpointFiles:
    """The files a checkpoint path stands for: its weights, its config, its tokenizer files."""

    path: Path
    weights: tuple[Path, ...]
    config: Path | None
    tokenizer: tuple[Path, ...]  # tokenizer files in the same directory (beside a file checkpoint too)

    def all(self) -> tuple[Path, ...]:
        return self.weights + ((self.config,) if self.config else ())

    def stamp(self) -> tuple:
        """(path, size, mtime) of every file: what the content-hash cache is keyed by."""
        out = []
        for p in self.all():
            st = p.stat()
            out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
        return tuple(out)


def locate(path: str | os.PathLike, where: str = "checkpoint") -> CheckpointFiles:
    """The checkpoint's files; a missing path, an empty directory or a sharded index that names
    missing files is an error naming ``where``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LtvlError(f"checkpoint path does not exist: {p}", where=where, fix="give a local file or directory")
    if p.is_file():  # a model config beside it: config.json, or UNITER's way, <name>.json (uniter-base.json)
        tok = tuple(p.parent / n for n in TOKENIZER_FILES if (p.parent / n).is_file())
        cfgs = [c for c in (p.with_suffix(".json"), p.parent / "config.json") if c.is_file()]
        return CheckpointFiles(p, (p,), cfgs[0] if cfgs else None, tok)
    config = p / "config.json" if (p / "config.json").is_file() else None
    tok = tuple(p / n for n in TOKENIZER_FILES if (p / n).is_file())
    for single, index in ((SAFETENSORS, f"{SAFETENSORS}.index.json"), (BIN, f"{BIN}.index.json")):
        if (p / single).is_file():
            return CheckpointFiles(p, (p / single,), config, tok)
        if (p / index).is_file():
            return CheckpointFiles(p, _shards(p / index), config, tok)
    loose = sorted(p.glob("*.safetensors"))
    if len(loose) == 1:
        return CheckpointFiles(p, (loose[0],), config, tok)
    raise LtvlError(
        f"checkpoint directory {p} holds no weights ({SAFETENSORS} or {BIN}, or a sharded *.index.json)"
        + (f"; it has {len(loose)} .safetensors files and no index" if loose else ""),
        where=where, fix="copy the weights next to config.json, as transformers' save_pretrained writes them")


def _shards(index: Path) -> tuple[Path, ...]:
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LtvlError(f"not a readable shard index ({e})", where=str(index),
                        fix="the index is damaged: download the checkpoint again") from e
    bad = [n for n in names if not isinstance(n, str) or Path(n).name != n]  # a shard lies beside its index
    if bad:
        raise LtvlError(f"the shard index names a file outside its directory: {bad[0]!r}", where=str(index),
                        fix="download the checkpoint again")
    paths = tuple(index.parent / n for n in names)
    missing = [p.name for p in paths if not p.is_file()]
    if missing or not paths:
        raise LtvlError(f"the shard index names {len(paths)} file(s); missing: {missing[:3]}", where=str(index),
                        fix="download every shard the index lists")
    return paths


def read_config(files: CheckpointFiles) -> dict[str, Any] | None:
    if files.config is None:
        return None
    try:
        cfg = json.loads(files.config.read_text())
    except (OSError, ValueError) as e:
        raise LtvlError(f"config.json is not valid JSON ({e})", where=str(files.config),
                        fix="restore the config.json that came with the checkpoint") from e
    if not isinstance(cfg, dict):
        raise LtvlError("config.json must hold a JSON object", where=str(files.config))
    return cfg


# --- tensors -----------------------------------------------------------------------------------
def _fix_name(name: str) -> str:
    """Old BERT files (and UNITER's loader) name LayerNorm parameters gamma/beta."""
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def _unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """A torch.load result as a flat {name: tensor}: plain state dicts, or one nested under
    ``model`` / ``state_dict`` / ``model_state`` (UNITER's VCR second stage saves the latter)."""
    if isinstance(obj, Mapping):
        for key in ("model_state", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
        if tensors:
            return tensors
        raise LtvlError(f"holds a {type(obj).__name__} with no tensors (keys: {list(obj)[:5]})", where=where,
                        fix="pass a checkpoint saved as a state dict {name: tensor}")
    raise LtvlError(f"holds a {type(obj).__name__}, not a state dict of tensors", where=where,
                    fix="pass a checkpoint saved as a state dict {name: tensor} (torch.save(model.state_dict(), p))")


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise _unreadable(path, e) from e
        obj = _torch_load_plain(path)  # a legacy (non-zip) torch.save file cannot be memory-mapped
    except Exception as e:  # noqa: BLE001 - pickle, zip and EOF errors all mean "not a readable checkpoint"
        raise _unreadable(path, e) from e
    return _unwrap(obj, str(path))


def _torch_load_plain(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: Exception) -> LtvlError:
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    unsafe = "weights_only" in str(e) or "Unsupported global" in str(e)
    return LtvlError(
        f"cannot read the checkpoint {'safely' if unsafe else ''} ({type(e).__name__}: {reason})".replace("  ", " "),
        where=str(path),
        fix=("it pickles Python objects, which ltvl never loads: re-save its state dict "
             "(torch.save(model.state_dict(), p)) or convert it to safetensors" if unsafe else
             "the file is truncated or corrupt: download or copy it again"))


def _safetensors_open(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise LtvlError(f"not a readable safetensors file ({e})", where=str(path),
                        fix="the file is truncated or corrupt: download or copy it again") from e


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_state(files: CheckpointFiles) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, names as stored except gamma/beta -> weight/bias."""
    out: dict[str, torch.Tensor] = {}
    for path in files.weights:
        if _is_safetensors(path):
            from safetensors import SafetensorError

            with _safetensors_open(path) as f:
                try:
                    part = {k: f.get_tensor(k) for k in f.keys()}
                except (SafetensorError, OSError, ValueError) as e:
                    raise LtvlError(f"not a readable safetensors file ({e})", where=str(path),
                                    fix="the file is truncated or corrupt: download or copy it again") from e
        else:
            part = _torch_load(path)
        out.update({_fix_name(k): v for k, v in part.items()})
    return out


def read_shapes(files: CheckpointFiles) -> dict[str, tuple[int, ...]]:
    """name -> shape without reading the values (safetensors header; a memory-mapped torch file)."""
    out: dict[str, tuple[int, ...]] = {}
    for path in files.weights:
        if _is_safetensors(path):
            with _safetensors_open(path) as f:
                part = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            part = {k: tuple(v.shape) for k, v in _torch_load(path).items()}
        out.update({_fix_name(k): v for k, v in part.items()})
    if not out:
        raise LtvlError("the checkpoint holds no tensors", where=str(files.path), fix="check the file")
    return out


# --- content hash ------------------------------------------------------------------------------
def _hash_tensors(files: CheckpointFiles) -> str:
    from ltvl.util.weights import update_with_state

    h = hashlib.sha256()
    update_with_state(h, read_state(files))
    cfg = read_config(files)
    h.update(json.dumps(cfg, sort_keys=True).encode() if cfg is not None else b"no config")
    return h.hexdigest()


_HASHES: dict[tuple, str] = {}


def content_sha256(files: CheckpointFiles) -> str:
    """sha256 of the checkpoint's tensors (names, dtypes, shapes, values) and its config: the same
    weights saved as .bin or .safetensors hash alike, new weights at the same path do not. Cached
    by each file's path, size and mtime, in memory and under ``$LTVL_HOME/cache/checkpoints``."""
    from ltvl.util.home import home

    stamp = files.stamp()
    if stamp in _HASHES:
        return _HASHES[stamp]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:32]
    cache = home() / "cache" / "checkpoints" / f"{key}.json"
    try:
        got = json.loads(cache.read_text())
        if got.get("stamp") == json.loads(json.dumps(stamp)) and re.fullmatch(r"[0-9a-f]{64}", got.get("sha256", "")):
            _HASHES[stamp] = got["sha256"]
            return got["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    sha = _hash_tensors(files)
    try:
        atomic_write_text(cache, json.dumps({"stamp": stamp, "sha256": sha}))
    except OSError:  # a read-only home only costs the next run a re-hash
        pass
    _HASHES[stamp] = sha
    return sha


def files_sha256(paths: Iterable[Path]) -> str:
    """sha256 of small files' names and bytes (a tokenizer's vocabulary and configs)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


# --- what model it is ----------------------------------------------------------------------------
_LAYER = re.compile(r"(?:^|\.)(layer|x_layers|r_layers)\.(\d+)\.")


@dataclass
class Inspection:
    """A checkpoint's model type and architecture, read from config.json and the tensor shapes."""

    kind: str  # uniter | bert | lxmert | vilt | unknown
    evidence: str  # how the kind was recognised, for messages
    arch: dict[str, int | None] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        a = ", ".join(f"{k} {v}" for k, v in self.arch.items() if v is not None)
        return f"{KIND_NAMES.get(self.kind, self.kind)} checkpoint ({self.evidence}; {a})"


def _kind_from_keys(names: Iterable[str]) -> tuple[str, str]:
    names = list(names)
    first = {n.split(".", 1)[0] for n in names}
    for prefix, kind in (("uniter", "uniter"), ("lxmert", "lxmert"), ("vilt", "vilt")):
        if prefix in first:
            return kind, f"keys {prefix}.*"
    joined = "\n".join(names)
    if ".x_layers." in joined or "visn_fc." in joined:
        return "lxmert", "keys encoder.x_layers.*"
    if "patch_embeddings" in joined or ".layernorm_before." in joined:
        return "vilt", "keys embeddings.patch_embeddings.*"
    if "img_embeddings." in joined:
        return "uniter", "keys img_embeddings.*"
    if "bert" in first:
        return "bert", "keys bert.*"
    if re.search(r"(^|\n)(bert\.)?encoder\.layer\.0\.attention\.self\.query\.weight", joined):
        return "bert", "keys encoder.layer.N.attention.self.*"
    return "unknown", f"keys {sorted(first)[:4]}"


def _strip(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in shapes.items()}


def _count(shapes: Mapping[str, tuple], group: str) -> int:
    idx = {int(m.group(2)) for k in shapes for m in [_LAYER.search(k)] if m and m.group(1) == group}
    return max(idx) + 1 if idx else 0


def _bert_arch(s: Mapping[str, tuple], cfg: dict | None) -> dict[str, int | None]:
    word = s.get("embeddings.word_embeddings.weight")
    pos = s.get("embeddings.position_embeddings.weight")
    inter = s.get("encoder.layer.0.intermediate.dense.weight")
    img = s.get("img_embeddings.img_linear.weight")
    return {
        "layers": _count(s, "layer"),
        "hidden": word[1] if word else None,
        "heads": (cfg or {}).get("num_attention_heads"),
        "intermediate": inter[0] if inter else None,
        "positions": pos[0] if pos else None,
        "vocab": word[0] if word else None,
        "type_vocab": (s.get("embeddings.token_type_embeddings.weight") or (None,))[0],
        **({"img_dim": img[1]} if img else {}),
    }


def _lxmert_arch(s: Mapping[str, tuple], cfg: dict | None) -> dict[str, int | None]:
    word = s.get("embeddings.word_embeddings.weight")
    visn = s.get("encoder.visn_fc.visn_fc.weight")
    return {"l_layers": _count(s, "layer"), "x_layers": _count(s, "x_layers"), "r_layers": _count(s, "r_layers"),
            "hidden": word[1] if word else None, "heads": (cfg or {}).get("num_attention_heads"),
            "vocab": word[0] if word else None, "visual_feat_dim": visn[1] if visn else None}


def _vilt_arch(s: Mapping[str, tuple], cfg: dict | None) -> dict[str, int | None]:
    word = s.get("embeddings.text_embeddings.word_embeddings.weight")
    pos = s.get("embeddings.text_embeddings.position_embeddings.weight")
    patch = s.get("embeddings.patch_embeddings.projection.weight")
    return {"layers": _count(s, "layer"), "hidden": word[1] if word else None,
            "heads": (cfg or {}).get("num_attention_heads"), "positions": pos[0] if pos else None,
            "vocab": word[0] if word else None, "patch": patch[-1] if patch else None}


# config.json key -> arch key, per kind: a disagreement between the two is an error
_CONFIG_KEYS = {
    "bert": {"num_hidden_layers": "layers", "hidden_size": "hidden", "intermediate_size": "intermediate",
             "max_position_embeddings": "positions", "vocab_size": "vocab", "type_vocab_size": "type_vocab"},
    "lxmert": {"l_layers": "l_layers", "x_layers": "x_layers", "r_layers": "r_layers", "hidden_size": "hidden",
               "vocab_size": "vocab", "visual_feat_dim": "visual_feat_dim"},
    "vilt": {"num_hidden_layers": "layers", "hidden_size": "hidden", "max_position_embeddings": "positions",
             "vocab_size": "vocab", "patch_size": "patch"},
}
_CONFIG_KEYS["uniter"] = _CONFIG_KEYS["bert"]
_PREFIX = {"uniter": "uniter.", "bert": "bert.", "lxmert": "lxmert.", "vilt": "vilt."}
_ARCH = {"uniter": _bert_arch, "bert": _bert_arch, "lxmert": _lxmert_arch, "vilt": _vilt_arch}


def inspect_files(files: CheckpointFiles) -> Inspection:
    """The model type (config.json's ``model_type`` and the key names must agree) and the
    architecture, checked between config.json and the weights."""
    cfg = read_config(files)
    shapes = read_shapes(files)
    key_kind, evidence = _kind_from_keys(shapes)
    cfg_kind = str(cfg.get("model_type", "")) if cfg else ""
    where = str(files.config or files.path)
    agree = cfg_kind == key_kind or (cfg_kind == "bert" and key_kind == "uniter")
    if cfg_kind and key_kind != "unknown" and not agree:
        raise LtvlError(f"config.json says model_type {cfg_kind!r}, but the weights are {KIND_NAMES[key_kind]}'s "
                        f"({evidence})", where=where, fix="the directory mixes two models: restore its files")
    kind = key_kind if key_kind != "unknown" else (cfg_kind if cfg_kind in KINDS else "unknown")
    if key_kind == "unknown" and cfg_kind:
        evidence = f"config.json model_type {cfg_kind!r}"
    elif cfg_kind:
        evidence = f"config.json model_type {cfg_kind!r}, {evidence}"
    if kind == "unknown":
        return Inspection("unknown" if not cfg_kind else cfg_kind, evidence, {}, cfg, shapes)
    stripped = _strip(shapes, _PREFIX[kind])
    arch = _ARCH[kind](stripped, cfg)
    for ck, ak in _CONFIG_KEYS[kind].items():
        if cfg and ck in cfg and arch.get(ak) not in (None, 0) and cfg[ck] != arch[ak]:
            raise LtvlError(f"config.json {ck} is {cfg[ck]}, but the weights have {ak} {arch[ak]}", where=where,
                            fix="config.json and the weights come from different models: restore the pair")
    if cfg and kind in ("bert", "uniter", "vilt") and arch.get("hidden") and cfg.get("num_attention_heads"):
        if arch["hidden"] % int(cfg["num_attention_heads"]):
            raise LtvlError(f"config.json num_attention_heads {cfg['num_attention_heads']} does not divide hidden "
                            f"size {arch['hidden']}", where=where, fix="restore the checkpoint's config.json")
    return Inspection(kind, evidence, arch, cfg, stripped)


@lru_cache(maxsize=64)
def _inspect_cached(stamp: tuple, path: str) -> Inspection:
    return inspect_files(locate(path))


def inspect(path: str | os.PathLike, where: str = "checkpoint") -> tuple[CheckpointFiles, Inspection]:
    """:func:`locate` + :func:`inspect_files`, cached by the files' path, size and mtime."""
    files = locate(path, where)
    return files, _inspect_cached(files.stamp(), str(files.path))


def backbone_keys(kind: str, state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Split a published state dict into (backbone tensors without the base-model prefix,
    dropped pre-training/task heads, other unexpected names)."""
    prefix = _PREFIX.get(kind, "")
    heads = HEAD_PREFIXES.get(kind, ())
    body, dropped, other = {}, [], []
    for k, v in state.items():
        if prefix and k.startswith(prefix):
            body[k[len(prefix):]] = v
        elif k.startswith(heads):
            dropped.append(k)
        elif prefix and kind != "bert":
            other.append(k)
        else:
            body[k] = v
    return body, dropped, other


def head_groups(names: Iterable[str]) -> str:
    """``cls.* (12), itm_output.* (2)``: dropped heads, listed once by their module."""
    groups: dict[str, int] = {}
    for n in names:
        parts = n.split(".")
        g = ".".join(parts[:3]) if parts[0] in _PREFIX and len(parts) > 3 else parts[0]
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(f"{g}.* ({c})" for g, c in sorted(groups.items()))
