"""``ltvl data import FORMAT``: read a published dataset's files, write ltvl's layout."""

from __future__ import annotations

import json
from pathlib import Path

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers import FORMATS, lxmert, uniter, vilt
from ltvl.vl.data.importers.common import source_bytes, write_split, write_stream
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.writer import DatasetWriter

VILT_IMAGE_SIZE = 384  # ViLT's shorter side


def _answers(path: Path | None, task: str, needed: bool) -> dict[str, int] | None:
    if path is None:
        if needed:
            raise LtvlError(f"{task} needs its answer vocabulary", where="--answers",
                            fix="pass the ans2label JSON that came with the data ({answer: label})")
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LtvlError(f"not a JSON answer vocabulary ({e})", where=str(path)) from e
    if not isinstance(d, dict) or sorted(d.values()) != list(range(len(d))):
        raise LtvlError("must map each answer to a label 0..N-1", where=str(path), fix="pass an ans2label JSON")
    return d


def _vocab_list(answers: dict[str, int] | None) -> list[str]:
    return [a for a, _ in sorted(answers.items(), key=lambda kv: kv[1])] if answers else []


def check_format(fmt: str, task: str) -> None:
    """The format exists and reads this task: checked before any file is opened."""
    if fmt not in FORMATS:
        raise LtvlError(f"unknown format {fmt!r}", where="FORMAT", fix=f"one of {', '.join(FORMATS)}")
    tasks = {"uniter": uniter.TASKS, "lxmert": lxmert.TASKS, "vilt": vilt.TASKS}[fmt]
    if fmt == "vilt" and task == "gqa":
        raise LtvlError("ViLT publishes no GQA files (dandelin/ViLT has no write_gqa.py)", where="--task",
                        fix="import GQA from LXMERT's files: ltvl data import lxmert --task gqa …")
    if task not in tasks:
        other = [f for f, m in (("uniter", uniter), ("lxmert", lxmert), ("vilt", vilt)) if task in m.TASKS]
        raise LtvlError(f"the {fmt} importer does not read task {task!r}", where="--task",
                        fix=f"{fmt} reads {', '.join(tasks)}" + (f"; {task} imports from {' or '.join(other)}"
                                                                 if other else ""))


def run_import(fmt: str, task: str, out: Path, splits: dict[str, list[Path]], features: list[Path],
               answers_file: Path | None = None, vocab: Path | None = None,
               image_size: int = VILT_IMAGE_SIZE) -> DatasetInfo:
    check_format(fmt, task)
    sources = [p for paths in splits.values() for p in paths] + list(features)
    need = source_bytes(sources)
    desc = f"{fmt} import: " + "; ".join(f"{s}={','.join(map(str, p))}" for s, p in splits.items())
    if fmt == "vilt":
        return _import_vilt(task, out, splits, need, image_size, desc)
    if not features:
        raise LtvlError("no image features given", where="--features",
                        fix="UNITER: the img_db directories; LXMERT: the TSV files")
    answers = _answers(answers_file, task, needed=task in ("vqa", "gqa"))
    soft = fmt == "uniter" and task in ("pretrain", "flickr30k")  # MRC-kl's targets: caption (pre-training) data
    regions_of = None
    if fmt == "uniter":
        img_dbs = [uniter.ImgDb(p, keep_soft=soft) for p in features]
        txt = {s: [uniter.TxtDb(p) for p in paths] for s, paths in splits.items()}
        examples = {s: _concat([uniter.examples(task, t, answers) for t in dbs]) for s, dbs in txt.items()}
        tokenizer = next(iter(txt.values()))[0].tokenizer(vocab)
        if task == "vcr":
            tokenizer["extra_tokens"] = uniter.VCR_SPECIAL_TOKENS
        for split, ex in examples.items():
            uniter.check_token_ids(ex, tokenizer.get("vocab_size"), tokenizer.get("extra_tokens", 0),
                                   ", ".join(map(str, splits[split])))
        if task == "refcoco_plus":
            regions_of = {f"visual_grounding_coco_gt_{int(im['id']):012}.npz": len(im["ann_ids"])
                          for dbs in txt.values() for t in dbs
                          for im in json.loads((t.dir / "images.json").read_text())}

        def regions(split):
            return uniter.regions(img_dbs, examples[split].image_names(), regions_of)
    else:
        if vocab is not None:
            raise LtvlError("LXMERT's questions are text; --vocab applies to UNITER's word-piece ids", where="--vocab")
        examples = {s: lxmert.examples(task, paths, answers) for s, paths in splits.items()}
        tokenizer = None

        def regions(split):
            return lxmert.regions(features)
    split0 = next(iter(splits))
    first = next(iter(regions(split0)), None)
    if first is None:
        names = examples[split0].image_names()
        raise LtvlError(f"no image in the feature sources matches the examples of split {split0!r} (they name e.g. "
                        f"{names[0]!r})" if names else f"split {split0!r} has no examples", where="--features",
                        fix="pass the feature files of these questions' images")
    labels = first.labels is not None
    info = DatasetInfo(task=task, feat_dim=int(first.features.shape[1]), num_regions=0,
                       answers=_vocab_list(answers), num_labels=3 if task == "snli_ve" else None,
                       source=desc, splits=list(splits), tokenizer=tokenizer,
                       region_classes=_region_classes(fmt, first) if labels else None,
                       soft_label_dim=int(first.soft.shape[1]) if soft and first.soft is not None else None,
                       unlabelled=[s for s, ex in examples.items() if ex.unlabelled],
                       import_log=[f"{s}: {line}" for s, ex in examples.items() for line in ex.log])
    with DatasetWriter(out, info, need) as w:
        for split in splits:
            write_split(w, split, examples[split], regions(split), info.feat_dim,
                        ", ".join(map(str, features)), labelled=labels, soft_dim=info.soft_label_dim or 0)
    return DatasetInfo.load(out)


def _region_classes(fmt: str, first) -> int:
    """How many classes region_labels index: UNITER's soft labels have the background first (1,601
    columns, 1,600 objects); LXMERT's objects_id are already the 1,600 objects."""
    return int(first.soft.shape[1]) - 1 if fmt == "uniter" and first.soft is not None else (
        uniter.REGION_CLASSES if fmt == "uniter" else lxmert.REGION_CLASSES)


def _concat(parts):
    out = parts[0]
    for p in parts[1:]:
        if p.unlabelled != out.unlabelled:
            raise LtvlError("a split joins labelled and unlabelled txt_dbs", where="--split",
                            fix="import the unlabelled txt_db (e.g. vqa_test.db) as a split of its own")
        for k, v in p.rows.items():
            out.rows.setdefault(k, []).extend(v)
        out.log.extend(p.log)
    return out


def _import_vilt(task: str, out: Path, splits: dict[str, list[Path]], need: int, image_size: int,
                 desc: str) -> DatasetInfo:
    from ltvl.vl.data.importers.common import Examples

    label2ans: dict[int, str] = {}
    info = DatasetInfo(task=task, feat_dim=0, num_regions=0, image_size=image_size, source=desc,
                       splits=list(splits))
    with DatasetWriter(out, info, need) as w:
        for split, files in splits.items():
            whole = Examples(task)
            write_stream(w, split, vilt.read(task, files, label2ans, whole), 0)
            if whole.unlabelled:
                info.unlabelled.append(split)
            info.import_log += [f"{split}: {line}" for line in whole.log]
        if task in ("vqa", "gqa"):
            n = max(label2ans, default=-1) + 1
            info.answers = [label2ans.get(i, f"<label {i}>") for i in range(n)]
    return DatasetInfo.load(out)


__all__ = ["run_import"]
