"""Checkpoints in exactly the layouts they are published in, at a small size.

- UNITER (ChenRocks/UNITER ``utils/save.py`` ``ModelSaver``): ``torch.save({k: v.cpu() for k, v in
  model.state_dict().items()})`` of ``UniterForPretraining``: ``uniter.*`` (no buffers: UNITER's
  embeddings register none), MRM's ``uniter.img_embeddings.mask_embedding``, and the heads
  ``cls.predictions.{transform.dense, transform.LayerNorm, bias, decoder}`` (decoder tied to the
  word embeddings), ``feat_regress.{net.0, net.2, weight (tied to img_linear), bias}``,
  ``region_classifier.net.{0, 2, 3}`` (1601 classes), ``itm_output``; vocabulary 28,996 (cased).
- transformers (BERT, LXMERT, ViLT): ``save_pretrained`` of the pre-training classes the hub
  holds (``BertForPreTraining``, ``LxmertForPreTraining``, ``ViltForMaskedLM``): config.json +
  model.safetensors; ``.bin``-only as transformers 4 wrote it (``torch.save`` of the state dict);
  old Google-converted BERT files name LayerNorm parameters ``gamma``/``beta``.
- airsplay/lxmert (``src/lxrt/entry.py`` ``save``): ``torch.save(model.state_dict())`` of
  ``LXRTPretraining``: the same module tree under ``bert.*`` (``module.`` under DataParallel).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

CASED_VOCAB = 28996  # bert-base-cased, UNITER's vocabulary (config/uniter-base.json)
UNCASED_VOCAB = 30522


def vocab_file(directory: Path, size: int) -> Path:
    """A vocab.txt of ``size`` tokens with BERT's special ids ([PAD] 0, [UNK] 100, [CLS] 101,
    [SEP] 102, [MASK] 103), cut from MiniLM's bert-base-uncased vocabulary (a layout fixture:
    the tokens themselves do not matter to these tests)."""
    from ltvl.vl.models.presets import minilm_dir

    directory.mkdir(parents=True, exist_ok=True)
    tokens = Path(minilm_dir(), "vocab.txt").read_text().splitlines()
    extra = [f"[extra{i}]" for i in range(max(0, size - len(tokens)))]
    (directory / "vocab.txt").write_text("\n".join((tokens + extra)[:size]) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": size == UNCASED_VOCAB,
                                                                 "tokenizer_class": "BertTokenizer"}))
    return directory


def uniter_pt(path: Path, layers: int = 2, hidden: int = 64, heads: int = 2, vocab: int = CASED_VOCAB,
              img_dim: int = 16, seed: int = 0, config: bool = True) -> dict[str, torch.Tensor]:
    """An official-layout UNITER pre-training checkpoint, with its model config beside it as
    UNITER's config/uniter-base.json is written (``config``); returns what was saved."""
    from transformers import BertConfig

    from ltvl.vl.models.uniter import UniterBackbone

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=512)
    bb = UniterBackbone(cfg, img_dim)
    state = {f"uniter.{k}": v.detach().clone() for k, v in bb.state_dict().items()}
    word = state["uniter.embeddings.word_embeddings.weight"]
    img_linear = state["uniter.img_embeddings.img_linear.weight"]
    state["uniter.img_embeddings.mask_embedding.weight"] = torch.randn(2, img_dim) * 0.02
    h = hidden
    heads_sd = {
        "cls.predictions.transform.dense.weight": torch.randn(h, h) * 0.02, "cls.predictions.transform.dense.bias":
        torch.zeros(h), "cls.predictions.transform.LayerNorm.weight": torch.ones(h),
        "cls.predictions.transform.LayerNorm.bias": torch.zeros(h), "cls.predictions.bias": torch.zeros(vocab),
        "cls.predictions.decoder.weight": word,  # tied, as BertOnlyMLMHead ties it
        "feat_regress.net.0.weight": torch.randn(h, h) * 0.02, "feat_regress.net.0.bias": torch.zeros(h),
        "feat_regress.net.2.weight": torch.ones(h), "feat_regress.net.2.bias": torch.zeros(h),
        "feat_regress.weight": img_linear, "feat_regress.bias": torch.zeros(img_dim),  # tied to img_linear
        "region_classifier.net.0.weight": torch.randn(h, h) * 0.02, "region_classifier.net.0.bias": torch.zeros(h),
        "region_classifier.net.2.weight": torch.ones(h), "region_classifier.net.2.bias": torch.zeros(h),
        "region_classifier.net.3.weight": torch.randn(1601, h) * 0.02, "region_classifier.net.3.bias":
        torch.zeros(1601), "itm_output.weight": torch.randn(2, h) * 0.02, "itm_output.bias": torch.zeros(2)}
    state.update(heads_sd)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in state.items()}, path)
    if config:
        path.with_suffix(".json").write_text(json.dumps({
            "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 2 * hidden,
            "max_position_embeddings": 512, "num_attention_heads": heads, "num_hidden_layers": layers,
            "type_vocab_size": 2, "vocab_size": vocab},
            indent=2))
    return state


def bert_dir(directory: Path, hidden: int = 64, layers: int = 2, heads: int = 2, vocab: int = UNCASED_VOCAB,
             fmt: str = "safetensors", gamma_beta: bool = False, tokenizer: bool = True, seed: int = 1):
    """``BertForPreTraining.save_pretrained`` (or the .bin of transformers 4 / Google's converted
    files with gamma/beta); returns the model."""
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    model = BertForPreTraining(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, intermediate_size=2 * hidden))
    model.save_pretrained(directory)
    if fmt == "bin":  # the tensors save_pretrained wrote (the tied MLM decoder is saved once, as the embeddings)
        from safetensors.torch import load_file

        state = load_file(directory / "model.safetensors")
        (directory / "model.safetensors").unlink()
        if gamma_beta:
            state = {(k[: -len("weight")] + "gamma" if "LayerNorm.weight" in k else
                      k[: -len("bias")] + "beta" if "LayerNorm.bias" in k else k): v for k, v in state.items()}
        torch.save(state, directory / "pytorch_model.bin")
    if tokenizer:
        vocab_file(directory, vocab)
    return model


def lxmert_dir(directory: Path, hidden: int = 64, layers: tuple[int, int, int] = (1, 1, 1), feat_dim: int = 16,
               heads: int = 2, tokenizer: bool = True, seed: int = 2):
    from transformers import LxmertConfig, LxmertForPreTraining

    torch.manual_seed(seed)
    model = LxmertForPreTraining(LxmertConfig(vocab_size=UNCASED_VOCAB, hidden_size=hidden, num_attention_heads=heads,
                                              intermediate_size=2 * hidden, l_layers=layers[0], x_layers=layers[1],
                                              r_layers=layers[2], visual_feat_dim=feat_dim))
    model.save_pretrained(directory)
    if tokenizer:
        vocab_file(directory, UNCASED_VOCAB)
    return model


def airsplay_lxrt(path: Path, model, data_parallel: bool = False) -> Path:
    """``model_LXRT.pth`` as airsplay's LXRTEncoder.save writes it: bert.* (module.bert.* under DataParallel)."""
    pre = "module." if data_parallel else ""
    state = {pre + ("bert." + k[len("lxmert."):] if k.startswith("lxmert.") else k): v
             for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def vilt_dir(directory: Path, hidden: int = 64, layers: int = 2, heads: int = 2, patch: int = 8,
             image_size: int = 64, tokenizer: bool = True, seed: int = 3):
    from transformers import ViltConfig, ViltForMaskedLM

    torch.manual_seed(seed)
    model = ViltForMaskedLM(ViltConfig(vocab_size=UNCASED_VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=heads, intermediate_size=2 * hidden, image_size=image_size,
                                       patch_size=patch, max_image_length=-1))
    model.save_pretrained(directory)
    if tokenizer:
        vocab_file(directory, UNCASED_VOCAB)
    return model


def copy_without(src: Path, dst: Path, drop: str) -> Path:
    """A copy of a checkpoint directory with one file removed (e.g. the tokenizer)."""
    shutil.copytree(src, dst)
    (dst / drop).unlink()
    return dst
