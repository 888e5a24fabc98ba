"""Checkpoints in the layouts they are published in (tests/helpers/checkpoints.py) load exactly, or
stop with a message before any compute: UNITER's .pt with its cased vocabulary, BERT for θ'0,
transformers' LXMERT and ViLT directories, airsplay's LXMERT file, .bin-only directories."""

import json
import re
import shutil

import pytest
import torch

from ltvl.params.resolve import resolve_chain, resolve_ticket
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import build_vl
from ltvl.vl.data.synthetic import make_synthetic
from ltvl.vl.models.checkpoint import content_sha256, locate
from tests.helpers import checkpoints as C
from tests.test_cli import ltvl


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    make_synthetic("vqa", root / "data", n_train=16, n_test=8)
    out = {"root": root, "data": str(root / "data")}
    out["uniter_state"] = C.uniter_pt(root / "uniter" / "uniter-base.pt")
    C.vocab_file(root / "uniter", C.CASED_VOCAB)
    out["uniter"] = str(root / "uniter" / "uniter-base.pt")
    C.uniter_pt(root / "uniter-notok" / "uniter-base.pt")
    out["uniter_notok"] = str(root / "uniter-notok" / "uniter-base.pt")
    out["bert_model"] = C.bert_dir(root / "bert-gb", vocab=C.CASED_VOCAB, fmt="bin", gamma_beta=True)
    out["bert_gb"] = str(root / "bert-gb")
    C.bert_dir(root / "bert")
    out["bert"] = str(root / "bert")
    out["lxmert_model"] = C.lxmert_dir(root / "lxmert")
    out["lxmert"] = str(root / "lxmert")
    C.vilt_dir(root / "vilt")
    out["vilt"] = str(root / "vilt")
    return out


def _job(ck, **params):
    return resolve_chain({"data": ck["data"], "max_len": 12, **params})


def _model(job):
    return build_vl(job.vl).model_factory()


# --- 1. the official UNITER layout ---------------------------------------------------------------
def test_official_uniter_file_loads_with_its_cased_vocabulary_and_drops_its_heads(ck):
    job = _job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True)
    assert job.params.layers is None  # a base preset builds every layer unless told otherwise
    model = _model(job)
    bb = model.backbone
    assert bb.embeddings.word_embeddings.weight.shape == (C.CASED_VOCAB, 64)
    state = ck["uniter_state"]
    own = bb.state_dict()
    assert all(torch.equal(own[k], state["uniter." + k]) for k in own), "every backbone tensor is the file's"
    rep = bb.load_report
    assert len(rep.loaded) == len(own) and not rep.missing and not rep.unexpected
    line = rep.line()
    for head in ("cls.*", "feat_regress.*", "region_classifier.*", "itm_output.*",
                 "uniter.img_embeddings.mask_embedding"):
        assert head in line, line
    tok = build_vl(job.vl).data.tokenizer
    assert len(tok.get_vocab()) == C.CASED_VOCAB


def test_uniter_file_is_checked_against_the_published_size_and_its_vocabulary(ck, tmp_path):
    with pytest.raises(LtvlError, match=r"(?s)not the published uniter-base: layers 2 \(published 12\), hidden 64 "
                                        r"\(published 768\).*custom_size: true"):
        _job(ck, preset="uniter-base", checkpoint=ck["uniter"])
    with pytest.raises(LtvlError, match=r"(?s)params.tokenizer.*28,996-token vocabulary and no tokenizer.*"
                                        r"bert-base-cased"):
        _job(ck, preset="uniter-base", checkpoint=ck["uniter_notok"], custom_size=True)
    uncased = C.vocab_file(tmp_path / "uncased", C.UNCASED_VOCAB)
    with pytest.raises(LtvlError, match=r"has 30,522 tokens but the model's word embeddings have 28,996 rows"):
        _job(ck, preset="uniter-base", checkpoint=ck["uniter_notok"], custom_size=True, tokenizer=str(uncased))
    cased = C.vocab_file(tmp_path / "cased", C.CASED_VOCAB)
    job = _job(ck, preset="uniter-base", checkpoint=ck["uniter_notok"], custom_size=True, tokenizer=str(cased))
    assert dict(job.chain.context)["tokenizer"].startswith("sha256:")


def test_layers_keeps_the_first_n_and_counts_the_rest_as_left_out(ck):
    bb = _model(_job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True, layers=1)).backbone
    assert len(bb.encoder.layer) == 1
    assert len(bb.load_report.dropped_layers) == 16 and not bb.load_report.unexpected
    with pytest.raises(LtvlError, match=r"params.layers: layers 3 is more than the checkpoint's 2"):
        _job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True, layers=3)


def test_a_missing_backbone_tensor_is_an_error_unless_allowed_by_name(ck, tmp_path):
    state = torch.load(ck["uniter"], weights_only=True)
    del state["uniter.pooler.dense.weight"]
    (tmp_path / "u").mkdir()
    torch.save(state, tmp_path / "u" / "uniter-base.pt")
    shutil.copy(ck["uniter"].replace(".pt", ".json"), tmp_path / "u" / "uniter-base.json")
    shutil.copy(locate(ck["uniter"]).tokenizer[0], tmp_path / "u")  # vocab.txt
    path = str(tmp_path / "u" / "uniter-base.pt")
    with pytest.raises(LtvlError, match=r"(?s)lacks 1 backbone tensor.*pooler\.dense\.weight.*allow_missing"):
        _model(_job(ck, preset="uniter-base", checkpoint=path, custom_size=True))
    bb = _model(_job(ck, preset="uniter-base", checkpoint=path, custom_size=True,
                     allow_missing=r"^pooler\.dense\.weight$")).backbone
    assert bb.load_report.missing == ["pooler.dense.weight"]
    assert "allowed missing (freshly initialised): pooler.dense.weight" in bb.load_report.line()


# --- 2. θ'0: BERT weights by BERT's names ------------------------------------------------------------
def test_theta0_prime_loads_a_bert_checkpoint_into_the_encoder_by_its_names(ck):
    from ltvl.vl.models.prime import prime_state

    job = _job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True)
    model = _model(job)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    state, report = prime_state(ck["bert_gb"], _model(job), "uniter", seed=0)
    bert = {k.removeprefix("bert."): v for k, v in ck["bert_model"].state_dict().items() if k.startswith("bert.")}
    text = [k for k in theta0 if re.match(r"backbone\.(embeddings|encoder|pooler)\.", k)]
    assert text and all(torch.equal(state[k], bert[k.removeprefix("backbone.")]) for k in text)  # gamma/beta read
    assert len(report.loaded) == len(text) and not report.missing
    assert report.fresh and all(k.startswith("img_embeddings.") for k in report.fresh)
    assert torch.equal(state["backbone.img_embeddings.LayerNorm.weight"], torch.ones(64))
    assert not torch.equal(state["backbone.encoder.layer.0.attention.self.query.weight"],
                           theta0["backbone.encoder.layer.0.attention.self.query.weight"])  # not θ0 in disguise
    assert "dropped heads: cls.*" in report.line()


def test_theta0_prime_is_in_the_ticket_identity_by_content(ck, tmp_path):
    base = {"data": ck["data"], "max_len": 12, "preset": "uniter-base", "checkpoint": ck["uniter"],
            "custom_size": True, "ticket": "theta0_prime", "source": ["m.mask"]}
    a = resolve_ticket({**base, "prime_checkpoint": ck["bert_gb"]})
    moved = shutil.copytree(ck["bert_gb"], tmp_path / "elsewhere")
    assert resolve_ticket({**base, "prime_checkpoint": str(moved)}).prime_sha256 == a.prime_sha256
    C.bert_dir(tmp_path / "other-bert", vocab=C.CASED_VOCAB, seed=9)
    assert resolve_ticket({**base, "prime_checkpoint": str(tmp_path / "other-bert")}).prime_sha256 != a.prime_sha256
    with pytest.raises(LtvlError, match=r"prime_checkpoint.*ViLT checkpoint.*needs a BERT or UNITER checkpoint"):
        resolve_ticket({**base, "prime_checkpoint": ck["vilt"]})
    with pytest.raises(LtvlError, match=r"prime_checkpoint is θ'0's weights, but this ticket is 'random'"):
        resolve_ticket({**base, "ticket": "random", "prime_checkpoint": ck["bert_gb"]})


def test_theta0_prime_that_does_not_fit_is_refused(ck, tmp_path):
    from ltvl.vl.models.prime import prime_state

    job = _job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True)
    C.bert_dir(tmp_path / "narrow", hidden=32, vocab=C.CASED_VOCAB)
    with pytest.raises(LtvlError, match=r"(?s)narrow: 'embeddings\..*' has shape \[.*32\] in the checkpoint, "
                                        r"the model's is \[.*64\]"):
        prime_state(str(tmp_path / "narrow"), _model(job), "uniter", seed=0)


# --- 3. a checkpoint of the wrong model ----------------------------------------------------------------
@pytest.mark.parametrize("preset,fixture,message", [
    ("lxmert-base", "vilt", r"is a ViLT checkpoint .*preset 'lxmert-base' loads LXMERT checkpoints.*vilt-base"),
    ("lxmert-base", "bert", r"is a BERT checkpoint .*preset 'lxmert-base' loads LXMERT"),
    ("vilt-base", "lxmert", r"is a LXMERT checkpoint .*preset 'vilt-base' loads ViLT"),
    ("vilt-base", "bert", r"is a BERT checkpoint .*preset 'vilt-base' loads ViLT"),
    ("uniter-base", "lxmert", r"is a LXMERT checkpoint .*preset 'uniter-base' loads UNITER or BERT.*lxmert-base"),
    ("uniter-base", "vilt", r"is a ViLT checkpoint .*preset 'uniter-base' loads UNITER or BERT"),
    ("minilm", "bert", r"preset 'minilm' takes no checkpoint"),
    ("tiny", "uniter", r"preset 'tiny' takes no checkpoint"),
])
def test_a_checkpoint_of_another_model_is_refused_before_compute(ck, preset, fixture, message):
    with pytest.raises(LtvlError, match="(?s)" + message):
        _job(ck, preset=preset, checkpoint=ck[fixture], custom_size=True)


def test_a_smaller_model_of_the_right_type_is_not_the_base_preset_unless_said(ck):
    with pytest.raises(LtvlError, match=r"not the published vilt-base: layers 2 \(published 12\), hidden 64"):
        _job(ck, preset="vilt-base", checkpoint=ck["vilt"])
    with pytest.raises(LtvlError, match=r"not the published lxmert-base: l_layers 1 \(published 9\)"):
        _job(ck, preset="lxmert-base", checkpoint=ck["lxmert"])
    _job(ck, preset="vilt-base", checkpoint=ck["vilt"], custom_size=True)


def test_lxmert_and_vilt_directories_load_exactly_and_report_their_heads(ck):
    bb = _model(_job(ck, preset="lxmert-base", checkpoint=ck["lxmert"], custom_size=True)).backbone
    ref = {k.removeprefix("lxmert."): v for k, v in ck["lxmert_model"].state_dict().items()}
    assert all(torch.equal(v, ref[k]) for k, v in bb.lxmert.state_dict().items())
    assert "obj_predict_head.*" in bb.load_report.line() and not bb.load_report.missing
    vilt = _model(_job(ck, preset="vilt-base", checkpoint=ck["vilt"], custom_size=True)).backbone
    assert "mlm_score.*" in vilt.load_report.line() and not vilt.load_report.missing


def test_airsplay_lxmert_file_loads_as_the_transformers_directory_does(ck, tmp_path):
    from ltvl.vl.models import presets

    path = C.airsplay_lxrt(tmp_path / "model_LXRT.pth", ck["lxmert_model"], data_parallel=True)
    cfg_dir = json.loads((ck["root"] / "lxmert" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg_dir))  # a small LXMERT needs its config beside it
    C.vocab_file(tmp_path, C.UNCASED_VOCAB)
    job = _job(ck, preset="lxmert-base", checkpoint=str(path), custom_size=True)
    bb = _model(job).backbone
    ref = {k.removeprefix("lxmert."): v for k, v in ck["lxmert_model"].state_dict().items()}
    assert all(torch.equal(v, ref[k]) for k, v in bb.lxmert.state_dict().items())
    assert presets.PRESETS["lxmert-base"].accepts == ("lxmert",)


# --- 4. identity is content --------------------------------------------------------------------------
def test_the_same_path_with_new_weights_is_a_new_chain_and_bin_equals_safetensors(ck, tmp_path):
    d = shutil.copytree(ck["bert"], tmp_path / "bert")
    a = _job(ck, preset="uniter-base", checkpoint=str(d), custom_size=True)
    C.bert_dir(tmp_path / "bert2", seed=5)
    shutil.copy(tmp_path / "bert2" / "model.safetensors", d / "model.safetensors")
    b = _job(ck, preset="uniter-base", checkpoint=str(d), custom_size=True)
    assert a.dense.sha256 != b.dense.sha256 and a.chain.sha256 != b.chain.sha256
    C.bert_dir(tmp_path / "st", seed=7)
    C.bert_dir(tmp_path / "bin", seed=7, fmt="bin")
    assert content_sha256(locate(tmp_path / "st")) == content_sha256(locate(tmp_path / "bin"))


# --- 5. damaged and disagreeing files: exit 2 before compute ----------------------------------------
def test_damaged_or_disagreeing_checkpoints_are_named(ck, tmp_path):
    st = shutil.copytree(ck["vilt"], tmp_path / "trunc-st")
    data = (st / "model.safetensors").read_bytes()
    (st / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LtvlError, match=r"model.safetensors.*(truncated or corrupt|not a readable)"):
        _job(ck, preset="vilt-base", checkpoint=str(st), custom_size=True)
    cfg = shutil.copytree(ck["vilt"], tmp_path / "cfg")
    doc = json.loads((cfg / "config.json").read_text())
    (cfg / "config.json").write_text(json.dumps({**doc, "hidden_size": 128}))
    with pytest.raises(LtvlError, match=r"config.json hidden_size is 128, but the weights have hidden 64"):
        _job(ck, preset="vilt-base", checkpoint=str(cfg), custom_size=True)
    with pytest.raises(LtvlError, match=r"is a UNITER checkpoint .*preset 'lxmert-base' loads LXMERT"):
        _job(ck, preset="lxmert-base", checkpoint=ck["uniter"])
    with pytest.raises(LtvlError, match=r"params.max_len: max_len 60 exceeds the 40 text positions of vilt-base"):
        _job(ck, preset="vilt-base", checkpoint=ck["vilt"], custom_size=True, max_len=60)
    with pytest.raises(LtvlError, match=r"max_len 60 exceeds the 40 text positions of tiny-vilt"):
        _job(ck, preset="tiny-vilt", max_len=60)
    pt = tmp_path / "trunc.pt"
    pt.write_bytes(open(ck["uniter"], "rb").read()[:5000])
    with pytest.raises(LtvlError, match=r"(?s)trunc.pt.*truncated or corrupt") as e:
        _job(ck, preset="uniter-base", checkpoint=str(pt), custom_size=True)
    assert "safetensors" not in str(e.value)
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(LtvlError, match=r"list.pt: holds a list, not a state dict"):
        _job(ck, preset="uniter-base", checkpoint=str(lst))


class Evil:
    """Unpickling this would run code of the file's choosing (its __reduce__); weights_only refuses it."""


def test_a_pickled_object_is_never_loaded(ck, tmp_path):
    evil = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(2), "cfg": Evil()}, evil)
    with pytest.raises(LtvlError, match=r"(?s)evil.bin.*cannot read the checkpoint safely.*never loads"):
        _job(ck, preset="uniter-base", checkpoint=str(evil))


def test_truncated_bin_directory_exits_2_from_the_command_line(ck, tmp_path):
    d = shutil.copytree(ck["bert_gb"], tmp_path / "bert")
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) - 4000])
    res = ltvl("imp", "--preset", "uniter-base", "--checkpoint", d, "--custom-size", "--data", ck["data"],
               "--steps", "1", "--root", tmp_path / "chains")
    assert res.returncode == 2, res.stderr
    assert "pytorch_model.bin" in res.stderr and "Traceback" not in res.stderr


# --- 6. .bin directories everywhere; prune --preset --------------------------------------------------
def test_bin_only_bert_directory_builds_every_layer_of_uniter_base(ck):
    job = _job(ck, preset="uniter-base", checkpoint=ck["bert_gb"], custom_size=True)
    bb = _model(job).backbone
    assert len(bb.encoder.layer) == 2 and bb.load_report.kind == "bert" and not bb.load_report.missing
    ref = ck["bert_model"].state_dict()
    assert torch.equal(bb.encoder.layer[1].output.LayerNorm.weight, ref["bert.encoder.layer.1.output.LayerNorm.weight"])


def test_prune_reads_bin_and_takes_a_presets_prunable_set(ck, tmp_path):
    res = ltvl("prune", ck["bert_gb"], "--sparsity", "0.5", "--out", tmp_path / "b.mask")
    assert res.returncode == 0, res.stderr
    res = ltvl("prune", ck["lxmert"], "--preset", "lxmert-base", "--list")
    assert res.returncode == 0, res.stderr
    assert "visn_fc" not in res.stdout and "x_layers.0" in res.stdout
    res = ltvl("prune", ck["vilt"], "--preset", "lxmert-base", "--list")
    assert res.returncode == 2 and "ViLT checkpoint, not one preset 'lxmert-base' loads" in res.stderr


def test_imp_trains_a_theta0_prime_ticket_from_a_bert_checkpoint_and_resumes(ck, tmp_path):
    from ltvl.pruning import prune_to_sparsity, save_mask, select_prunable

    job = _job(ck, preset="uniter-base", checkpoint=ck["uniter"], custom_size=True)
    model = _model(job)
    mask = prune_to_sparsity({n: p.detach() for n, p in select_prunable(model, job.chain.prunable).items()}, None,
                             0.5)
    save_mask(mask, tmp_path / "m.mask")
    args = ["imp", "--preset", "uniter-base", "--checkpoint", ck["uniter"], "--custom-size", "--data", ck["data"],
            "--max-len", "12", "--steps", "2", "--batch-size", "4", "--eval-limit", "8", "--root", tmp_path / "r",
            "--ticket", "theta0_prime", "--source", tmp_path / "m.mask"]
    res = ltvl(*args, "--prime-checkpoint", ck["bert_gb"])
    assert res.returncode == 0, res.stderr
    assert re.search(r"θ'0 .*bert-gb: BERT checkpoint, loaded \d+, missing 0", res.stdout), res.stdout
    assert "mask 1: sparsity 0.500" in res.stdout
    again = ltvl(*args, "--prime-checkpoint", ck["bert_gb"])
    assert "(resumed)" in again.stdout
    no_prime = ltvl(*args)
    assert no_prime.returncode == 2 and "theta0_prime baseline needs another checkpoint" in no_prime.stderr


def test_imp_prints_the_load_report_and_trains_the_official_layout(ck, tmp_path):
    res = ltvl("imp", "--preset", "uniter-base", "--checkpoint", ck["uniter"], "--custom-size", "--data", ck["data"],
               "--max-len", "12", "--steps", "2", "--batch-size", "4", "--eval-limit", "8", "--target", "0.5",
               "--root", tmp_path / "r")
    assert res.returncode == 0, res.stderr
    assert re.search(r"θ0 .*uniter-base.pt: UNITER checkpoint, loaded 49, missing 0, unexpected 0; dropped heads: "
                     r"cls\.\* \(6\)", res.stdout), res.stdout
    assert "round 1: sparsity 0.500" in res.stdout


def test_a_base_preset_without_weights_is_refused_unless_random_is_said(ck):
    with pytest.raises(LtvlError, match=r"(?s)params.checkpoint: preset 'lxmert-base' needs its pre-trained weights"
                                        r".*checkpoint: random"):
        _job(ck, preset="lxmert-base")
    job = _job(ck, preset="lxmert-base", checkpoint="random")
    assert not any(k == "checkpoint" for k, _ in job.chain.context) and job.vl.backbone.checkpoint is None
    with pytest.raises(LtvlError, match=r"checkpoint: random applies to base presets; 'minilm'"):
        _job(ck, checkpoint="random")


def test_published_sizes_are_recognised_from_real_size_state_dicts():
    """The architecture read from a full-size model's names and shapes (built on the meta device,
    so without memory) is the published one: the check passes them and names any other size."""
    from transformers import BertConfig, LxmertConfig, LxmertForPreTraining, ViltConfig, ViltForMaskedLM

    from ltvl.vl.models import checkpoint as ck_mod
    from ltvl.vl.models.presets import PRESETS, _arch_differences
    from ltvl.vl.models.uniter import UniterBackbone

    with torch.device("meta"):
        uniter = {f"uniter.{k}": tuple(v.shape) for k, v in UniterBackbone(BertConfig(vocab_size=28996), 2048)
                  .state_dict().items()}
        lxmert = {k: tuple(v.shape) for k, v in LxmertForPreTraining(LxmertConfig()).state_dict().items()}
        vilt = {k: tuple(v.shape) for k, v in ViltForMaskedLM(ViltConfig()).state_dict().items()}
    cases = [("uniter-base", "uniter", uniter, {"num_attention_heads": 12}), ("lxmert-base", "lxmert", lxmert,
             {"num_attention_heads": 12}), ("vilt-base", "vilt", vilt, {"num_attention_heads": 12})]
    for preset, kind, shapes, cfg in cases:
        assert ck_mod._kind_from_keys(shapes)[0] == kind
        arch = ck_mod._ARCH[kind](ck_mod._strip(shapes, ck_mod._PREFIX[kind]), cfg)
        assert _arch_differences(PRESETS[preset], arch) == [], (preset, arch)
    assert _arch_differences(PRESETS["uniter-large"], ck_mod._bert_arch(ck_mod._strip(uniter, "uniter."), {})) \
        == ["layers 12 (published 24)", "hidden 768 (published 1024)", "intermediate 3072 (published 4096)"]
