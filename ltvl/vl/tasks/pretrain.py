"""Pre-training objectives for task-agnostic tickets (SPEC §2): MLM, masked-region feature
regression (MRFR), masked-region classification (MRC: cross-entropy against each region's
detector class, background excluded, as UNITER's MRC targets ``soft_labels[:, 1:].argmax() + 1``;
MRC-kl, opt-in: KL to the detector's soft labels over all 1,601 classes, UNITER's ``mrc-kl``,
on data imported with them) and image-text matching (ITM). Masking is conditional as in UNITER:
one modality is masked while the other is intact.
"""

from __future__ import annotations

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.tasks.base import VLTask, column, image_batch, text_inputs

OBJECTIVES = ("mlm", "mrfr", "mrc", "itm")  # the default set
KNOWN = (*OBJECTIVES, "mrc_kl")
MASK_P = 0.15


def _head(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12), nn.Linear(hidden, out))


class PretrainTask(VLTask):
    name = "pretrain"

    def __init__(self, objectives: tuple[str, ...] = OBJECTIVES):
        bad = [o for o in objectives if o not in KNOWN]
        if bad or not objectives:
            raise LtvlError(
                f"unknown pre-training objective(s) {bad}",
                where="task.objectives",
                fix=f"choose from {list(KNOWN)}",
            )
        self.objectives = tuple(objectives)

    def sequences_per_example(self) -> None:
        return None  # one pass per objective group, heads over masked tokens/regions: counted on the first step

    def build_head(self, hidden, info):
        heads = nn.ModuleDict(
            {
                "mlm": nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12)),
                "mrfr": _head(hidden, info.feat_dim),
                "itm": nn.Linear(hidden, 2),
            }
        )
        if "mrc" in self.objectives:
            classes = info.region_classes or info.num_labels  # num_labels: ltvl's synthetic pre-training data
            if not classes:
                raise LtvlError(
                    "MRC needs region classes: 'region_classes' in dataset.json and a region_labels column (an "
                    "import older than this ltvl recorded neither: re-import it)",
                    where="dataset.json region_classes",
                    fix="re-import the features with `ltvl data import`, or drop 'mrc' from task.objectives",
                )
            heads["mrc"] = _head(hidden, classes)
        if "mrc_kl" in self.objectives:
            if not info.soft_label_dim:
                raise LtvlError("MRC-kl needs the detector's soft labels (region_soft_labels)",
                                where="dataset.json soft_label_dim",
                                fix="import UNITER's img_db for --task pretrain (or flickr30k), or drop 'mrc_kl'")
            heads["mrc_kl"] = _head(hidden, info.soft_label_dim)
        return heads

    def prepare(self, split, tokenizer, max_len):
        ex = split.examples
        if "mrc" in self.objectives and not split.images.has_region_labels:
            raise LtvlError("MRC needs a region_labels column in images.arrow", where=f"{split.name}/images.arrow",
                            fix="drop 'mrc' from objectives, or import the detector's region classes")
        if "mrc_kl" in self.objectives and not split.images.has_soft_labels:
            raise LtvlError("MRC-kl needs a region_soft_labels column in images.arrow",
                            where=f"{split.name}/images.arrow", fix="drop 'mrc_kl', or import UNITER's soft labels")
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        return {
            "rows": torch.arange(ex.num_rows),
            "image_id": column(ex, "image_id"),
            "special": special,
            "mask_id": tokenizer.mask_token_id,
            **text_inputs(tokenizer, ex, max_len),
        }

    def collate(self, prep, split, rows, gen):
        ids, att = prep["input_ids"][rows], prep["attention_mask"][rows]
        maskable = (att == 1) & ~torch.isin(ids, prep["special"])
        pick = (torch.rand(ids.shape, generator=gen) < MASK_P) & maskable
        first = maskable.float().argmax(1)  # guarantee one masked token per caption
        pick[torch.arange(len(ids)), first] |= maskable[torch.arange(len(ids)), first]
        mlm_labels = torch.where(pick, ids, torch.full_like(ids, -100))
        img = image_batch(split.images, prep["image_id"][rows.numpy()])
        r = img["features"].shape[1]
        region_pick = (torch.rand(len(rows), r, generator=gen) < MASK_P) & (img["image_mask"] == 1)
        region_pick[torch.arange(len(rows)), torch.randint(0, r, (len(rows),), generator=gen)] = True
        region_pick &= img["image_mask"] == 1
        n = len(prep["rows"])
        other = torch.randint(0, n, (len(rows),), generator=gen)
        img_ids = torch.from_numpy(prep["image_id"])
        other = torch.where(img_ids[other] == img_ids[rows], (other + n // 2) % n, other)
        itm_neg = torch.rand(len(rows), generator=gen) < 0.5
        itm_texts = torch.where(itm_neg, other, rows)
        return {
            "input_ids": ids,
            "attention_mask": att,
            "mlm_input_ids": torch.where(pick, prep["mask_id"], ids),
            "mlm_labels": mlm_labels,
            "region_pick": region_pick,
            "itm_input_ids": prep["input_ids"][itm_texts],
            "itm_attention_mask": prep["attention_mask"][itm_texts],
            "itm_labels": (~itm_neg).long(),
            **img,
        }

    def forward(self, backbone, head, batch, text_delta=None, image_delta=None):
        img = {k: batch[k] for k in ("features", "boxes", "image_mask", "pixels") if k in batch}
        out = {}
        if "mlm" in self.objectives:
            o = backbone(
                {"input_ids": batch["mlm_input_ids"], "attention_mask": batch["attention_mask"], **img},
                text_delta,
                image_delta,
            )
            h = head["mlm"](o.text[batch["mlm_labels"] != -100])
            out["mlm"] = h @ backbone.word_embeddings().weight.T  # decoder tied to the word embeddings
        if {"mrfr", "mrc", "mrc_kl"} & set(self.objectives):
            masked = dict(img, features=batch["features"].masked_fill(batch["region_pick"][..., None], 0.0))
            o = backbone(
                {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **masked},
                text_delta,
                image_delta,
            )
            hid = o.image[batch["region_pick"]]
            if "mrfr" in self.objectives:
                out["mrfr"] = head["mrfr"](hid)
            for name in ("mrc", "mrc_kl"):
                if name in self.objectives:
                    out[name] = head[name](hid)
        if "itm" in self.objectives:
            o = backbone(
                {"input_ids": batch["itm_input_ids"], "attention_mask": batch["itm_attention_mask"], **img},
                text_delta,
                image_delta,
            )
            out["itm"] = head["itm"](o.pooled)
        return out

    def loss(self, out, batch):
        total = 0.0
        if "mlm" in out:
            total = total + nn.functional.cross_entropy(out["mlm"], batch["mlm_labels"][batch["mlm_labels"] != -100])
        if "mrfr" in out:
            target = batch["features"][batch["region_pick"]].to(out["mrfr"].dtype)
            total = total + nn.functional.mse_loss(out["mrfr"], target)
        if "mrc" in out:
            total = total + nn.functional.cross_entropy(out["mrc"], batch["region_labels"][batch["region_pick"]])
        if "mrc_kl" in out:  # UNITER: kl_div(log_softmax(pred), soft labels, reduction='none'), then .mean()
            target = batch["region_soft_labels"][batch["region_pick"]].to(out["mrc_kl"].dtype)
            total = total + nn.functional.kl_div(nn.functional.log_softmax(out["mrc_kl"], -1), target,
                                                 reduction="none").mean()
        if "itm" in out:
            total = total + nn.functional.cross_entropy(out["itm"], batch["itm_labels"])
        return total

    def score(self, out, batch):
        s = {"n": float(len(batch["input_ids"]))}
        if "mlm" in out:
            lab = batch["mlm_labels"][batch["mlm_labels"] != -100]
            s.update(mlm_correct=float((out["mlm"].argmax(1) == lab).sum()), mlm_n=float(len(lab)))
        if "mrc" in out:
            lab = batch["region_labels"][batch["region_pick"]]
            s.update(mrc_correct=float((out["mrc"].argmax(1) == lab).sum()), mrc_n=float(len(lab)))
        if "mrc_kl" in out:  # the best object class (background excluded) agrees with the detector's
            want = batch["region_soft_labels"][batch["region_pick"]][:, 1:].argmax(1)
            s.update(mrc_kl_correct=float((out["mrc_kl"][:, 1:].argmax(1) == want).sum()), mrc_kl_n=float(len(want)))
        if "mrfr" in out:
            tgt = batch["features"][batch["region_pick"]].to(out["mrfr"].dtype)
            s.update(mrfr_se=float(((out["mrfr"] - tgt) ** 2).mean(1).sum()), mrfr_n=float(len(tgt)))
        if "itm" in out:
            s.update(itm_correct=float((out["itm"].argmax(1) == batch["itm_labels"]).sum()))
        return s

    def finalize(self, s):
        res = {"n": s["n"]}
        if "mlm_n" in s:
            res["mlm_accuracy"] = s["mlm_correct"] / s["mlm_n"]
        if "mrc_n" in s:
            res["mrc_accuracy"] = s["mrc_correct"] / s["mrc_n"]
        if "mrc_kl_n" in s:
            res["mrc_kl_accuracy"] = s["mrc_kl_correct"] / s["mrc_kl_n"]
        if "mrfr_n" in s:
            res["mrfr_mse"] = s["mrfr_se"] / s["mrfr_n"]
        if "itm_correct" in s:
            res["itm_accuracy"] = s["itm_correct"] / s["n"]
        accs = [v for k, v in res.items() if k.endswith("_accuracy")]
        res["metric"] = sum(accs) / len(accs) if accs else -res.get("mrfr_mse", 0.0)
        return res
