"""One chain or ticket job in this process, with no Ray and no MLflow: what ``ltvl chain run``
runs. The command line only parses options and shows rounds; building the job lives here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltvl.util.errors import LtvlError

TOY_TASK = "toy"  # the built-in text task and model: chains without VL data, for a first look and tests


@dataclass
class LocalChain:
    spec: Any  # ltvl.core.imp.ChainSpec
    model_factory: Callable[[], Any]
    train_task: Any
    data_sha256: str
    load_line: str | None  # what the backbone's checkpoint load found, for the log


def prepare_chain(raw: dict) -> LocalChain:
    """A chain from the parameters the user set (``raw``: only the non-defaults, so that rewind
    conflicts are seen), on the toy task or on VL data with its backbone."""
    from ltvl.params.resolve import data_for, resolve_chain

    if raw.get("task") == TOY_TASK:  # same chain parameters, the toy task and model instead of VL data
        from ltvl.core.toy import ToyTask, make_toy_model
        from ltvl.pruning import PrunableSpec

        job = resolve_chain({**raw, "task": "vqa"}, where="option")
        spec = dataclasses.replace(
            job.chain, prunable=PrunableSpec(), context=(("task", TOY_TASK), ("backbone", "toy-bert"))
        )
        seed = job.params.seed
        return LocalChain(spec, lambda: make_toy_model(seed), ToyTask(), "", None)
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    job = resolve_chain(raw, where="option")
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    load = setup.model_factory().backbone.load_report
    return LocalChain(job.chain, setup.model_factory, setup.data, setup.info.content_sha256,
                      None if load is None else load.line())


def run_chain_here(chain: LocalChain, root: Path, on_round: Callable[[Any], None]) -> Any:
    from ltvl.core.imp import run_chain_with_trainer
    from ltvl.core.train import Trainer

    return run_chain_with_trainer(chain.spec, chain.model_factory, Trainer(chain.train_task, chain.spec.train), root,
                                  on_round, data_sha256=chain.data_sha256)


def run_ticket_here(raw: dict, root: Path, say: Callable[[str], None], on_round: Callable[[Any], None]) -> tuple:
    """Re-train each mask of ``raw['source']`` as the baseline ``raw['ticket']`` (θ'0 from
    ``prime_checkpoint`` for theta0_prime), one resumable round per mask."""
    from ltvl.core.ticket_chain import run_ticket_chain
    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, prime_for, resolve_ticket, ticket_plan
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    if not raw.get("ticket") or not raw.get("source"):
        raise LtvlError("a ticket run needs --ticket (the baseline) and --source (mask files, repeatable)",
                        where="--ticket/--source", fix="e.g. --ticket theta0_prime --source m.mask --prime-checkpoint "
                                                     "bert-base-cased/")
    raw = {**raw, "source": [str(p) for p in raw["source"]]}
    job = resolve_ticket(raw, where="option").target
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    spec, sources = ticket_plan(raw, root)
    other = prime_for(raw, job, setup.model_factory, say)
    say(f"ticket {spec.short_hash} ({spec.baseline.value} on {len(sources)} mask(s)) → {root}/tickets")
    rounds = run_ticket_chain(spec, sources, setup.model_factory, Trainer(setup.data, spec.train), root, on_round,
                              other)
    return spec, rounds
