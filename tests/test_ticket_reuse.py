"""An exported ticket used again (#34 item 5): as a ticket job's source (its mask transferred to a task)
and as a chain's checkpoint (its backbone), verified first; a tampered export is refused by name."""

import pytest
import torch

from ltvl.params.resolve import resolve_chain, resolve_ticket
from ltvl.pruning import load_mask
from ltvl.tickets.export import write_ticket
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import build_vl
from ltvl.vl.datasets import ensure_synthetic
from tests.test_ticket_export import FACTS, trained_ticket


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    setup, model, mask = trained_ticket("tiny-lxmert")
    out = write_ticket(model, mask, "lxmert", {**FACTS, "preset": "tiny-lxmert"},
                       tmp_path_factory.mktemp("reuse") / "ticket", setup.data.tokenizer, setup.info.answers)
    return out, model, mask


def test_an_export_is_a_ticket_source(exported):
    out, _model, mask = exported
    job = resolve_ticket({"ticket": "imp", "source": [str(out)], "task": "nlvr2", "preset": "tiny-lxmert",
                          "data": "synthetic:nlvr2"})
    assert job.masks == (str(out / "mask.safetensors"),)
    assert load_mask(job.masks[0]).sha256 == mask.sha256


def test_an_export_is_a_checkpoint_and_loads_the_ticket_s_weights(exported):
    out, model, mask = exported
    job = resolve_chain({"preset": "lxmert-base", "checkpoint": str(out), "custom_size": True,
                         "data": str(ensure_synthetic("vqa")), "max_len": 12})
    assert job.vl.backbone.checkpoint == str(out / "model")
    loaded = build_vl(job.vl).model_factory()
    theirs = dict(loaded.backbone.named_parameters())
    for name, p in model.backbone.named_parameters():
        assert torch.equal(theirs[name], p.detach()), name
    pruned = next(iter(mask.names))
    assert (theirs[pruned.removeprefix("backbone.")][~mask.tensors[pruned]] == 0).all()


def test_a_tampered_export_is_refused_as_source_and_checkpoint(exported, tmp_path):
    import shutil

    out, _model, _mask = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "README.md").write_text("# a better ticket\n")
    with pytest.raises(LtvlError, match="fails verification: README.md: differs from the card"):
        resolve_ticket({"ticket": "imp", "source": [str(bad)], "task": "vqa", "preset": "tiny-lxmert",
                        "data": "synthetic:vqa"})
    with pytest.raises(LtvlError, match="fails verification"):
        resolve_chain({"preset": "lxmert-base", "checkpoint": str(bad), "custom_size": True, "data": "synthetic:vqa"})
