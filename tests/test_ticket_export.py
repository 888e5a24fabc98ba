"""Ticket export (#34 items 1, 3): a trained ticket written in its backbone's own layout loads with plain
transformers in a process that imports no ltvl and gives ltvl's logits; ``verify`` re-checks every
claim and names each breach (a flipped weight, a wrong sparsity, an edited card)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import prune_to_sparsity
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.tickets.export import verify_ticket, write_ticket
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.datasets import ensure_synthetic
from ltvl.vl.models.presets import BackboneSpec, get_preset

PLAIN = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoTokenizer
    d, kind = Path(sys.argv[1]), sys.argv[2]
    x = load_file(str(d.parent / "inputs.safetensors"))
    spec = json.loads((d / "head.json").read_text())
    layers = []
    for m in spec["modules"]:
        if m["module"] == "Linear":
            layers.append(torch.nn.Linear(m["in"], m["out"]))
        elif m["module"] == "GELU":
            layers.append(torch.nn.GELU(approximate=m["approximate"]))
        else:
            layers.append(torch.nn.LayerNorm(m["shape"], eps=m["eps"]))
    head = torch.nn.Sequential(*layers)
    head.load_state_dict(load_file(str(d / "head.safetensors")))
    out = {}
    with torch.no_grad():
        if kind == "vilt":
            m = AutoModel.from_pretrained(str(d / "model")).eval()
            pooled = m(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                       pixel_values=(x["pixels"] / 255.0 - 0.5) / 0.5,
                       pixel_mask=torch.ones(x["pixels"].shape[0], *x["pixels"].shape[2:], dtype=torch.long)
                       ).pooler_output
            out["logits"] = head(pooled)
        elif kind == "lxmert":
            m = AutoModel.from_pretrained(str(d / "model")).eval()
            pooled = m(input_ids=x["input_ids"], attention_mask=x["attention_mask"], visual_feats=x["features"].float(),
                       visual_pos=x["boxes"][..., :4].float(), visual_attention_mask=x["image_mask"]).pooled_output
            out["logits"] = head(pooled)
        else:  # UNITER: its own key layout for UNITER's code; the text encoder as a transformers BERT
            m = AutoModel.from_pretrained(str(d / "bert")).eval()
            out["text"] = m(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
            uniter = torch.load(d / "uniter" / "uniter.pt", weights_only=True)
            assert all(k.startswith(("uniter.", "vqa_output.")) for k in uniter), list(uniter)[:3]
            out["uniter_keys"] = torch.tensor(len(uniter))
    out["ids"] = AutoTokenizer.from_pretrained(str(d / "tokenizer"))("what color is the shape?",
                                                                     return_tensors="pt").input_ids
    assert not [k for k in sys.modules if k == "ltvl" or k.startswith("ltvl.")]
    save_file({k: v.contiguous() for k, v in out.items()}, str(d.parent / "plain.safetensors"))
''')


def trained_ticket(preset: str, sparsity: float = 0.75):
    setup = build_vl(VLSpec(task="vqa", data=str(ensure_synthetic("vqa")), backbone=BackboneSpec(preset=preset),
                            max_len=12))
    model = setup.model_factory()
    prunable = {n: p.detach() for n, p in model.named_parameters()
                if n.startswith("backbone.") and ".encoder." in n and n.endswith("weight") and p.ndim == 2}
    mask = prune_to_sparsity(prunable, None, sparsity)
    enforcer = MaskEnforcer(model, mask)
    Trainer(setup.data, TrainConfig(steps=2, lr=1e-3, batch_size=4, seed=0)).train(model, enforcer=enforcer)
    enforcer.remove()
    return setup, model.eval(), mask


FACTS = {"name": "IMP · vqa · seed 0 — round 2", "task": "vqa", "metric": 0.5, "dense_metric": 0.55, "round": 2,
         "seed": 0, "arm": "IMP", "chain_sha256": "c" * 64, "dense_sha256": "d" * 64, "data_sha256": "e" * 64}


@pytest.mark.parametrize("preset", ["tiny-vilt", "tiny-lxmert", "tiny"])
def test_an_exported_ticket_loads_without_ltvl_and_gives_its_logits(preset, tmp_path):
    setup, model, mask = trained_ticket(preset)
    kind = get_preset(preset).kind
    out = write_ticket(model, mask, kind, {**FACTS, "preset": preset}, tmp_path / "ticket", setup.data.tokenizer,
                       setup.info.answers)
    assert verify_ticket(out) == []
    batch = setup.data.batch(0, 3, 0)
    save_file({k: v.contiguous() for k, v in batch.items() if torch.is_tensor(v)}, str(tmp_path / "inputs.safetensors"))
    subprocess.run([sys.executable, "-I", "-c", PLAIN, str(out), kind], check=True, cwd=tmp_path)
    plain = load_file(str(tmp_path / "plain.safetensors"))
    with torch.no_grad():
        if kind == "uniter":
            bb = model.backbone
            text = bb.encoder(bb.embeddings(input_ids=batch["input_ids"]),
                              attention_mask=_mask4(bb, batch)).last_hidden_state
            torch.testing.assert_close(plain["text"], text, rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(plain["logits"], model(batch), rtol=1e-5, atol=1e-6)
    state = load_file(str(out / ("uniter/uniter.safetensors" if kind == "uniter" else "model/model.safetensors")))
    zeros = [k for k in state if state[k].ndim == 2 and (state[k] == 0).float().mean() > 0.5]
    assert zeros  # the pruned tensors are there, mostly exact zeros
    if kind == "uniter":  # a VQA ticket pooled on [CLS]: UNITER's own VQA model loads its head too
        head = load_file(str(out / "head.safetensors"))
        assert sorted(k for k in state if k.startswith("vqa_output.")) == sorted(f"vqa_output.{k}" for k in head)
        assert all(torch.equal(state[f"vqa_output.{k}"], v) for k, v in head.items())
    assert torch.equal(plain["ids"], setup.data.tokenizer("what color is the shape?", return_tensors="pt").input_ids)
    assert json.loads((out / "head.json").read_text())["labels"] == setup.info.answers


def _mask4(bb, batch):
    from transformers.masking_utils import create_bidirectional_mask
    emb = bb.embeddings(input_ids=batch["input_ids"])
    return create_bidirectional_mask(config=bb.config, inputs_embeds=emb, attention_mask=batch["attention_mask"])


def test_verify_names_a_flipped_weight_a_wrong_sparsity_and_an_edited_card(tmp_path):
    setup, model, mask = trained_ticket("tiny-vilt")
    out = write_ticket(model, mask, "vilt", {**FACTS, "preset": "tiny-vilt"}, tmp_path / "t", setup.data.tokenizer)
    assert verify_ticket(out) == []
    weights = out / "model" / "model.safetensors"
    good = weights.read_bytes()
    state = load_file(str(weights))
    name = next(n for n in mask.names)
    key = name.removeprefix("backbone.vilt.")
    state[key][~mask.tensors[name]] = 0.25  # pruned weights revived
    save_file(state, str(weights), metadata={"format": "pt"})
    found = verify_ticket(out)
    assert any("nonzero where the mask prunes them" in f and key in f for f in found), found
    assert any(f.startswith("model/model.safetensors: sha256 differs") for f in found)
    weights.write_bytes(good)
    manifest = json.loads((out / "ticket.json").read_text())
    (out / "ticket.json").write_text(json.dumps({**manifest, "sparsity": 0.5}))
    found = verify_ticket(out)
    assert any("differs from the stated 50.000000%" in f for f in found), found
    (out / "ticket.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    assert verify_ticket(out) == []
    card = (out / "README.md").read_text()
    (out / "README.md").write_text(card.replace("| this ticket | 0.5000 |", "| this ticket | 0.9000 |"))
    assert verify_ticket(out) == ["README.md: differs from the card ticket.json renders (it was edited)"]


def test_an_export_never_overwrites_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    setup, model, mask = trained_ticket("tiny-lxmert")
    (tmp_path / "taken").mkdir()
    from ltvl.util.errors import LtvlError
    with pytest.raises(LtvlError, match="already exists"):
        write_ticket(model, mask, "lxmert", FACTS, tmp_path / "taken")
    import ltvl.tickets.export as export

    def crash(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(export, "save_sparse", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ticket(model, mask, "lxmert", FACTS, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_registered_model_names_are_ascii_and_parse_as_models_uris():
    from ltvl.tickets.registry import model_name

    assert model_name("rewind-grid", "vqa", "IMP") == "rewind-grid.vqa.IMP"
    assert model_name("rewind-grid", "vqa", "IMP θi@30") == "rewind-grid.vqa.IMP-thetai-at-30"
    assert model_name("s", "nlvr2", "θ''0") == "s.nlvr2.theta0-shuffled"
    assert model_name("s", "vqa", "SparseGPT (one-shot) + fine-tune") == "s.vqa.SparseGPT-one-shot-plus-fine-tune"
    assert model_name("s", "vqa", "AT-IMP ε=0.01").isascii()


def test_a_card_s_command_names_a_shipped_config_by_name_and_keeps_the_overrides():
    from ltvl.plan.config import find_config, load_config
    from ltvl.tickets.from_sweep import sweep_command

    cfg = load_config("rewind_grid", find_config("rewind_grid"), ["params.steps=3"])
    assert sweep_command(cfg.origin) == "ltvl sweep run rewind_grid --set params.steps=3"
    other = load_config("rewind_grid", "tests/configs/tiny_rewind_grid.yaml", [], None)
    assert sweep_command(other.origin) == "ltvl sweep run tests/configs/tiny_rewind_grid.yaml"


def test_an_mlflow_run_names_its_chain_and_round(tmp_path):
    """`ltvl ticket export CONFIG --run ID`: a round's run names its chain and round, a chain's run its
    chain only, any other run is refused by name (real MLflow, sqlite)."""
    from mlflow import MlflowClient

    from ltvl.tickets.from_sweep import run_ref
    from ltvl.util.errors import LtvlError

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s")
    sha = "ab" * 32
    chain = client.create_run(exp, tags={"ltvl.kind": "chain", "ltvl.key": f"chain:{sha}"}).info.run_id
    rnd = client.create_run(exp, tags={"ltvl.kind": "round", "ltvl.chain_key": f"chain:{sha}", "ltvl.round": "2",
                                       "ltvl.key": f"round:{sha}:2"}).info.run_id
    dense = client.create_run(exp, tags={"ltvl.kind": "dense", "ltvl.key": "dense:" + "cd" * 32}).info.run_id
    assert run_ref(uri, rnd) == (sha, 2) and run_ref(uri, chain) == (sha, None)
    with pytest.raises(LtvlError, match="not a chain's or a round's run"):
        run_ref(uri, dense)
    with pytest.raises(LtvlError, match="has no run"):
        run_ref(uri, "0" * 32)
