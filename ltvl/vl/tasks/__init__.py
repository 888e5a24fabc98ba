"""Task registry: one module per task (batch format, head, loss, metric)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ltvl.util.errors import LtvlError
from ltvl.vl.tasks.base import TaskData, VLModel, VLTask
from ltvl.vl.tasks.classify import LabelTask, VQATask
from ltvl.vl.tasks.nlvr2 import NLVR2Task
from ltvl.vl.tasks.pretrain import PretrainTask
from ltvl.vl.tasks.refcoco import RefCOCOTask
from ltvl.vl.tasks.retrieval import RetrievalTask
from ltvl.vl.tasks.vcr import VCRTask


@dataclass(frozen=True)
class TaskEntry:
    make: Callable[..., VLTask]  # the task's class (or a closure over its options)
    description: str  # `ltvl list`'s line


# One table of tasks: the parameter schema's choices, `ltvl list` and get_task read it. A new task is
# one VLTask subclass (a module in this package) and one line here.
TASKS: dict[str, TaskEntry] = {
    "vqa": TaskEntry(VQATask, "VQA v2 style: MLP -> answer vocabulary, soft-score BCE, VQA accuracy"),
    "gqa": TaskEntry(lambda **kw: LabelTask("gqa", **kw), "GQA: MLP classifier over the answer vocabulary, CE, "
                                                            "accuracy"),
    "snli_ve": TaskEntry(lambda **kw: LabelTask("snli_ve", 3, **kw), "SNLI-VE: 3-way entailment, CE, accuracy"),
    "nlvr2": TaskEntry(NLVR2Task, "NLVR2: statement + two images, paired [CLS] -> binary, accuracy"),
    "vcr": TaskEntry(VCRTask, "VCR: 4 answers + 4 rationales, Q->A, QA->R, Q->AR accuracy"),
    "refcoco_plus": TaskEntry(RefCOCOTask, "RefCOCO+: a score per region, accuracy"),
    "flickr30k": TaskEntry(RetrievalTask, "Flickr30k retrieval: contrastive matching, IR/TR R@1/5/10"),
    "pretrain": TaskEntry(PretrainTask, "pre-training objectives MLM, MRFR, MRC, ITM (task-agnostic tickets)"),
}
TASK_DESCRIPTIONS = {name: entry.description for name, entry in TASKS.items()}


def get_task(name: str, **kw) -> VLTask:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        raise LtvlError(f"unknown task {name!r}", where="params.task",
                        fix=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(TASKS)}")
    return TASKS[name].make(**kw)


__all__ = ["TASKS", "TASK_DESCRIPTIONS", "TaskEntry", "TaskData", "VLModel", "VLTask", "get_task"]
