"""VCR: score each of 4 options with an MLP on [CLS]; Q→A, QA→R and Q→AR (both right) accuracy.

Q→A pairs the question with each answer; QA→R pairs question + correct answer with each
rationale (UNITER's setup). Training sums both cross-entropies.
"""

from __future__ import annotations

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import TOKEN_COLUMN
from ltvl.vl.tasks.base import VLTask, column, image_batch, join_ids, list_column, mlp_head, tokenize

N_OPT = 4


class VCRTask(VLTask):
    name = "vcr"

    def build_head(self, hidden, info):
        return mlp_head(hidden, 1)

    def sequences_per_example(self) -> int:
        return 2 * N_OPT  # Q→A over each answer, QA→R over each rationale

    def prepare(self, split, tokenizer, max_len):
        ex = split.examples
        answers, rats = list_column(ex, "answers"), list_column(ex, "rationales")
        a_lab = torch.from_numpy(column(ex, "answer_label").astype("int64"))
        r_lab = torch.from_numpy(column(ex, "rationale_label").astype("int64"))
        if any(len(a) != N_OPT for a in answers) or any(len(r) != N_OPT for r in rats):
            raise LtvlError(
                f"every example needs exactly {N_OPT} answers and {N_OPT} rationales",
                where="examples.answers/rationales",
            )
        if TOKEN_COLUMN in ex.schema.names:  # UNITER's ids: [CLS] q [SEP] a [SEP]; [CLS] q [SEP] a* [SEP] r [SEP]
            q = list_column(ex, TOKEN_COLUMN)
            qa = join_ids(tokenizer, [[x, a] for x, row in zip(q, answers) for a in row], max_len)
            qar = join_ids(tokenizer, [[x, row[int(lab)], r] for x, row, lab, rs in zip(q, answers, a_lab, rats)
                                       for r in rs], max_len)
        else:
            q = ex["text"].to_pylist()
            qa = tokenize(tokenizer, [x for x in q for _ in range(N_OPT)], max_len,
                          [a for row in answers for a in row])
            ctx = [f"{x} {row[int(lab)]}" for x, row, lab in zip(q, answers, a_lab)]
            qar = tokenize(tokenizer, [x for x in ctx for _ in range(N_OPT)], max_len,
                           [r for row in rats for r in row])
        shape = (ex.num_rows, N_OPT, max_len)
        return {
            "rows": torch.arange(ex.num_rows),
            "image_id": column(ex, "image_id"),
            "a_label": a_lab,
            "r_label": r_lab,
            "qa_ids": qa["input_ids"].view(shape),
            "qa_mask": qa["attention_mask"].view(shape),
            "qar_ids": qar["input_ids"].view(shape),
            "qar_mask": qar["attention_mask"].view(shape),
        }

    def collate(self, prep, split, rows, gen):
        img = image_batch(split.images, prep["image_id"][rows.numpy()])
        img = {k: v.repeat_interleave(N_OPT, dim=0) for k, v in img.items()}
        flat = lambda t: t[rows].flatten(0, 1)  # noqa: E731
        return {
            "qa_ids": flat(prep["qa_ids"]),
            "qa_mask": flat(prep["qa_mask"]),
            "qar_ids": flat(prep["qar_ids"]),
            "qar_mask": flat(prep["qar_mask"]),
            "a_label": prep["a_label"][rows],
            "r_label": prep["r_label"][rows],
            **img,
        }

    def forward(self, backbone, head, batch, text_delta=None, image_delta=None):
        img = {k: batch[k] for k in ("features", "boxes", "image_mask", "pixels") if k in batch}
        qa = backbone(
            {"input_ids": batch["qa_ids"], "attention_mask": batch["qa_mask"], **img}, text_delta, image_delta
        )
        qar = backbone(
            {"input_ids": batch["qar_ids"], "attention_mask": batch["qar_mask"], **img}, text_delta, image_delta
        )
        return head(qa.pooled).view(-1, N_OPT), head(qar.pooled).view(-1, N_OPT)

    def loss(self, out, batch):
        qa, qar = out
        return nn.functional.cross_entropy(qa, batch["a_label"]) + nn.functional.cross_entropy(qar, batch["r_label"])

    def score(self, out, batch):
        a_ok = out[0].argmax(1) == batch["a_label"]
        r_ok = out[1].argmax(1) == batch["r_label"]
        return {
            "q2a": float(a_ok.sum()),
            "qa2r": float(r_ok.sum()),
            "q2ar": float((a_ok & r_ok).sum()),
            "n": float(len(a_ok)),
        }

    def finalize(self, s):
        n = s["n"]
        return {"metric": s["q2ar"] / n, "q2a": s["q2a"] / n, "qa2r": s["qa2r"] / n, "q2ar": s["q2ar"] / n, "n": n}
