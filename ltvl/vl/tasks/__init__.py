"""Task registry: one module per task (batch format, head, loss, metric)."""

from __future__ import annotations

import difflib

from ltvl.util.errors import LtvlError
from ltvl.vl.tasks.base import TaskData, VLModel, VLTask
from ltvl.vl.tasks.classify import LabelTask, VQATask
from ltvl.vl.tasks.nlvr2 import NLVR2Task
from ltvl.vl.tasks.pretrain import PretrainTask
from ltvl.vl.tasks.refcoco import RefCOCOTask
from ltvl.vl.tasks.retrieval import RetrievalTask
from ltvl.vl.tasks.vcr import VCRTask

TASK_DESCRIPTIONS = {
    "vqa": "VQA v2 style: MLP -> answer vocabulary, soft-score BCE, VQA accuracy",
    "gqa": "GQA: MLP classifier over the answer vocabulary, CE, accuracy",
    "snli_ve": "SNLI-VE: 3-way entailment, CE, accuracy",
    "nlvr2": "NLVR2: statement + two images, paired [CLS] -> binary, accuracy",
    "vcr": "VCR: 4 answers + 4 rationales, Q->A, QA->R, Q->AR accuracy",
    "refcoco_plus": "RefCOCO+: a score per region, accuracy",
    "flickr30k": "Flickr30k retrieval: contrastive matching, IR/TR R@1/5/10",
    "pretrain": "pre-training objectives MLM, MRFR, MRC, ITM (task-agnostic tickets)",
}


def get_task(name: str, **kw) -> VLTask:
    makers = {"vqa": VQATask, "gqa": lambda: LabelTask("gqa"), "snli_ve": lambda: LabelTask("snli_ve", 3),
              "nlvr2": NLVR2Task, "vcr": VCRTask, "refcoco_plus": RefCOCOTask, "flickr30k": RetrievalTask,
              "pretrain": PretrainTask}
    if name not in makers:
        close = difflib.get_close_matches(name, makers, n=1)
        raise LtvlError(f"unknown task {name!r}", where="task.name",
                        fix=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(makers)}")
    return makers[name](**kw)


__all__ = ["TASK_DESCRIPTIONS", "TaskData", "VLModel", "VLTask", "get_task"]
