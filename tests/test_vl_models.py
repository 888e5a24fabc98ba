"""Backbones x tasks build, train a few steps and evaluate; masks from the IMP core apply; bad input."""
import json

import pytest
import torch

from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import MaskEnforcer, load_mask, prune_to_sparsity, save_mask, select_prunable
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.data.synthetic import make_synthetic
from ltvl.vl.models.presets import BackboneSpec

TASKS = ["vqa", "gqa", "snli_ve", "nlvr2", "vcr", "refcoco_plus", "flickr30k", "pretrain"]
BACKBONES = ["tiny", "tiny-lxmert", "tiny-vilt"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = {}
    for t in TASKS:
        d = tmp_path_factory.mktemp(t)
        make_synthetic(t, d, n_train=32, n_test=16)
        out[t] = str(d)
    return out


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("task", TASKS)
def test_every_pair_trains_masked_and_evaluates(datasets, task, backbone, tmp_path):
    if task == "refcoco_plus" and backbone == "tiny-vilt":
        pytest.skip("per-region task on a patch backbone is rejected (tested below)")
    setup = build_vl(VLSpec(task=task, data=datasets[task], backbone=BackboneSpec(backbone), max_len=12))
    model = setup.model_factory()
    prunable = select_prunable(model, setup.prunable)
    assert prunable and all(".encoder." in n or ".pooler." in n for n in prunable)
    assert not any("embeddings" in n or "head" in n or "visn_fc" in n for n in prunable)
    save_mask(prune_to_sparsity({n: p.detach() for n, p in prunable.items()}, None, 0.5), tmp_path / "m.mask")
    mask = load_mask(tmp_path / "m.mask")  # through a mask file, as the IMP core stores them
    trainer = Trainer(setup.data, TrainConfig(steps=2, batch_size=4, lr=1e-3))
    out = trainer.train(model, enforcer=MaskEnforcer(model, mask))
    assert torch.isfinite(torch.tensor(out.mean_loss))
    params = dict(model.named_parameters())
    assert all((params[n][~k] == 0).all() for n, k in mask.tensors.items())
    metrics = trainer.evaluate(model)
    assert 0.0 <= metrics["metric"] <= 1.0


def test_model_factory_is_deterministic(datasets):
    setup = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny")))
    a, b = setup.model_factory(), setup.model_factory()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny", seed=1))).model_factory()
    assert not torch.equal(a.state_dict()["head.0.weight"], other.state_dict()["head.0.weight"])


def test_pooling_cls_plus_image_reads_the_mean_image_state_and_cls_is_unchanged(datasets):
    """``cls`` is UNITER's pooler exactly; ``cls+image`` adds the mean image state before it, so the
    answer depends on the image through one linear map, not only through attention."""
    spec = VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny"))
    plain = build_vl(spec)
    pooled = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny", pooling="cls+image")))
    a, b = plain.model_factory(), pooled.model_factory()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # same θ0
    a.eval(), b.eval()
    batch = plain.data.task.collate(plain.data.eval_prep, plain.data.eval, torch.arange(8), torch.Generator())
    with torch.no_grad():
        out_a, out_b = a.backbone(batch), b.backbone(batch)
        seq = torch.cat([out_a.text, out_a.image], dim=1)
        assert torch.equal(out_a.pooled, a.backbone.pooler(seq))
        m = out_b.image_mask.float().unsqueeze(-1)
        by_hand = torch.tanh(b.backbone.pooler.dense(out_b.text[:, 0] + (out_b.image * m).sum(1) / m.sum(1)))
        assert torch.allclose(out_b.pooled, by_hand, atol=1e-6)
        assert not torch.allclose(out_a.pooled, out_b.pooled)


def test_pooling_is_refused_where_the_backbone_has_none(datasets):
    from ltvl.params.resolve import resolve_chain

    with pytest.raises(LtvlError, match="(?s)params.pooling: unknown pooling 'mean'.*one of: cls, cls\\+image"):
        resolve_chain({"pooling": "mean"})
    with pytest.raises(LtvlError, match="params.pooling.*UNITER-style presets; 'tiny-vilt' is vilt"):
        resolve_chain({"preset": "tiny-vilt", "pooling": "cls+image", "data": datasets["vqa"]})
    with pytest.raises(LtvlError, match="params.pooling"):
        build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny-lxmert", pooling="cls+image")))
    # a non-default pooling is part of the dense run's identity; the default adds nothing to it
    assert ("pooling", "cls+image") in resolve_chain({"pooling": "cls+image"}).chain.context
    assert not any(k == "pooling" for k, _ in resolve_chain({}).chain.context)


def test_minilm_preset_loads_real_weights_and_truncates(datasets):
    from safetensors import safe_open

    from ltvl.vl.models.presets import minilm_dir
    setup = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("minilm", num_layers=2)))
    model = setup.model_factory()
    assert len(model.backbone.encoder.layer) == 2 and model.backbone.hidden_size == 384
    with safe_open(f"{minilm_dir()}/model.safetensors", "pt") as f:
        real = f.get_tensor("encoder.layer.1.attention.self.query.weight")
    assert torch.equal(model.backbone.encoder.layer[1].attention.self.query.weight.detach(), real)


def test_truncating_minilm_is_quiet_but_a_real_loading_problem_is_not(datasets, caplog, tmp_path):
    """The dropped layers are no news: the load report counts them (transformers' own report would
    list them at every model build); a weight the checkpoint lacks is an error, not a warning."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    from ltvl.vl.models.presets import minilm_dir
    from ltvl.vl.models.uniter import UniterBackbone

    with caplog.at_level(logging.WARNING):
        bb = UniterBackbone.from_bert(minilm_dir(), img_dim=16, num_layers=2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    rep = bb.load_report
    assert rep.counts() == {"loaded": 39, "missing": 0, "unexpected": 0, "dropped_heads": 0, "dropped_layers": 64}
    broken = shutil.copytree(minilm_dir(), tmp_path / "m")
    state = load_file(broken / "model.safetensors")
    del state["pooler.dense.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(LtvlError, match=r"(?s)lacks 1 backbone tensor.*pooler\.dense\.weight"):
        UniterBackbone.from_bert(str(broken), img_dim=16, num_layers=2)


def test_uniter_checkpoint_converter_roundtrip(tmp_path, datasets):
    """A state dict in the UNITER repo's naming loads into the UNITER-style backbone exactly."""
    from ltvl.vl.data.store import DatasetInfo
    from ltvl.vl.models.convert import load_state, uniter_body
    from ltvl.vl.models.presets import build_backbone
    info = DatasetInfo.load(datasets["vqa"])
    src = build_backbone(BackboneSpec("tiny", seed=3), info)
    official = {f"uniter.{k}": v for k, v in src.state_dict().items()}
    official["uniter.img_embeddings.mask_embedding.weight"] = torch.zeros(2, 16)
    official["vqa_output.0.weight"] = torch.zeros(4, 4)
    dst = build_backbone(BackboneSpec("tiny", seed=4), info)
    body, rep = uniter_body(official, "uniter.pt")
    load_state(dst, body, rep)
    assert "img_embeddings.img_linear.weight" in rep.loaded and "encoder.layer.1.output.dense.weight" in rep.loaded
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
    assert "vqa_output.0.weight" in rep.dropped_heads and not rep.missing
    with pytest.raises(LtvlError, match="no 'uniter.\\*' tensors"):
        uniter_body({"bert.x": torch.zeros(1)}, "bert.pt")


def test_base_presets_have_the_real_shapes(tmp_path):
    make_synthetic("vqa", tmp_path, n_train=8, n_test=4)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    from ltvl.vl.data.store import DatasetInfo
    from ltvl.vl.models.presets import build_backbone
    info = DatasetInfo(**{**meta, "feat_dim": 2048})
    bb = build_backbone(BackboneSpec("uniter-base"), info)
    assert bb.hidden_size == 768 and len(bb.encoder.layer) == 12 and bb.img_embeddings.img_linear.in_features == 2048
    n = sum(p.numel() for n, p in select_prunable(bb).items())
    assert n == 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 768


@pytest.mark.parametrize("spec,msg", [
    (dict(backbone=BackboneSpec("minilmm")), "did you mean 'minilm'"),
    (dict(task="vqaa"), "did you mean 'vqa'"),
    (dict(backbone=BackboneSpec("uniter-base")), "region features are 16-d but preset 'uniter-base' takes 2048-d"),
    (dict(backbone=BackboneSpec("lxmert-base")), "takes 2048-d"),
    (dict(backbone=BackboneSpec("uniter-base", checkpoint="/nonexistent/dir")), "does not exist"),
])
def test_bad_backbone_or_task(datasets, spec, msg):
    args = {"task": "vqa", "data": datasets["vqa"], **spec}
    with pytest.raises(LtvlError, match=msg):
        build_vl(VLSpec(**args)).model_factory()


def test_incomplete_checkpoint_dir(tmp_path, datasets):
    (tmp_path / "ck").mkdir()
    with pytest.raises(LtvlError, match="holds no weights"):
        build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("lxmert-base", str(tmp_path / "ck"))))\
            .model_factory()
    (tmp_path / "ck" / "config.json").write_text("{}")
    with pytest.raises(LtvlError, match="holds no weights"):
        build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("lxmert-base", str(tmp_path / "ck"))))\
            .model_factory()


def test_incompatible_combinations(datasets, tmp_path):
    with pytest.raises(LtvlError, match="ViLT has patches"):
        build_vl(VLSpec(task="refcoco_plus", data=datasets["refcoco_plus"], backbone=BackboneSpec("tiny-vilt")))
    with pytest.raises(LtvlError, match="is a 'gqa' dataset, not 'vqa'"):
        build_vl(VLSpec(task="vqa", data=datasets["gqa"]))
    with pytest.raises(LtvlError, match="need detector regions"):
        build_vl(VLSpec(task="pretrain", data=datasets["pretrain"], backbone=BackboneSpec("tiny-vilt"),
                        objectives=("mlm", "mrfr")))
    make_synthetic("vqa", tmp_path, n_train=8, n_test=4)
    from tests.helpers.datasets import rewrite_dataset_json

    rewrite_dataset_json(tmp_path, image_size=None)
    with pytest.raises(LtvlError, match="stores no 'pixels'"):
        build_vl(VLSpec(task="vqa", data=str(tmp_path), backbone=BackboneSpec("tiny-vilt"))).model_factory()


def test_answer_vocabulary_must_match_the_head(datasets, tmp_path):
    from safetensors.torch import save_file
    setup = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny")))
    head = {k: v.clone() for k, v in setup.model_factory().head.state_dict().items()}
    head["3.weight"], head["3.bias"] = torch.zeros(5, 128), torch.zeros(5)
    save_file(head, str(tmp_path / "head.safetensors"))
    with pytest.raises(LtvlError, match="head has 5 outputs but the answer vocabulary has 2"):
        build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("tiny"),
                        head_checkpoint=str(tmp_path / "head.safetensors"))).model_factory()


def test_minilm_prunes_the_encoder_but_not_its_untrained_pooler(datasets):
    setup = build_vl(VLSpec(task="vqa", data=datasets["vqa"], backbone=BackboneSpec("minilm", num_layers=1)))
    names = list(select_prunable(setup.model_factory(), setup.prunable))
    assert len(names) == 6 and not any("pooler" in n for n in names)


def test_task_agnostic_imp_chain_on_pretraining_objectives(datasets, tmp_path):
    """The pre-training objectives drive an IMP chain (task-agnostic tickets)."""
    from ltvl.core.imp import ChainSpec, run_chain_with_trainer
    from ltvl.pruning import Schedule
    setup = build_vl(VLSpec(task="pretrain", data=datasets["pretrain"], backbone=BackboneSpec("tiny"), max_len=12))
    spec = ChainSpec(train=TrainConfig(steps=3, batch_size=8, lr=1e-3), schedule=Schedule("geometric", 0.5, 0.7),
                     prunable=setup.prunable, context=(("task", "pretrain"),))
    res = run_chain_with_trainer(spec, setup.model_factory, Trainer(setup.data, spec.train), tmp_path)
    assert [round(r.sparsity, 2) for r in res.rounds] == [0.0, 0.5, 0.75]
    assert {"mlm_accuracy", "itm_accuracy", "mrc_accuracy", "mrfr_mse"} <= set(res.rounds[-1].metrics)


def test_a_dataset_changed_under_the_same_path_is_refused_before_its_stores_are_replayed(tmp_path):
    """Stores are keyed by params (a data path, not its content): the dense record carries the
    dataset's content hash, and a chain on the same path with other content is refused, where a
    replay would otherwise return the old data's numbers as the new data's."""
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.core.imp import ChainSpec, run_chain_with_trainer
    from ltvl.pruning import Schedule

    data = tmp_path / "vqa"

    def chain(seed: int):
        make_synthetic("vqa", data, n_train=32, n_test=16, seed=seed)
        setup = build_vl(VLSpec(task="vqa", data=str(data), backbone=BackboneSpec("tiny")))
        spec = ChainSpec(train=TrainConfig(steps=3, batch_size=8, lr=1e-3), schedule=Schedule("geometric", 0.5, 0.5),
                         prunable=setup.prunable, context=(("task", "vqa"), ("data", str(data))))
        res = run_chain_with_trainer(spec, setup.model_factory, Trainer(setup.data, spec.train), tmp_path / "root",
                                     data_sha256=setup.info.content_sha256)
        return spec, setup, res

    spec, setup, first = chain(0)
    rec = DenseStore(tmp_path / "root", DenseSpec.of(spec), writer=False).record()
    assert rec.data_sha256 == setup.info.content_sha256 != ""
    _, _, again = chain(0)  # the same content: replayed, nothing trained
    assert all(r.replayed for r in again.rounds)
    with pytest.raises(LtvlError, match="dataset changed under the same path") as e:
        chain(1)  # new content, same path and params
    assert str(DenseStore(tmp_path / "root", DenseSpec.of(spec), writer=False).dir) in str(e.value)
    import dataclasses
    dataclasses.replace(rec, data_sha256="").check_data("ab" * 32, "w")  # older records name no data: accepted
