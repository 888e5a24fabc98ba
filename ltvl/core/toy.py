"""A tiny synthetic sequence task on a real transformers BERT, for fast tests of the core.

The label is which of four marker tokens occurs most often in the sequence, so the
model must attend across positions: a few hundred CPU steps separate a trained model
from chance (25%). Real-data tasks live in ``ltvl.vl.tasks``; this one exists so the
IMP core can be exercised in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig, BertModel

from ltvl.core.train import batch_indices, derive_seed

N_CLASSES = 4


def tiny_bert_config(
    layers: int = 2, hidden: int = 64, heads: int = 2, vocab: int = 32, seq_len: int = 16
) -> BertConfig:
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=seq_len + 2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


class ToyClassifier(nn.Module):
    """BERT encoder + pooler + linear head. Parameter names match transformers' BERT."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=True)
        self.head = nn.Linear(config.hidden_size, N_CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.bert(input_ids=input_ids).pooler_output)


def make_toy_model(seed: int = 0, **cfg) -> ToyClassifier:
    """Deterministic θ0 for a seed (stands in for a pre-trained checkpoint)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyClassifier(tiny_bert_config(**cfg))


@dataclass
class ToyTask:
    n_train: int = 2048
    n_test: int = 512
    seq_len: int = 16
    vocab: int = 32
    data_seed: int = 1234

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(derive_seed(self.data_seed, "toy"))
        n = self.n_train + self.n_test
        ids = torch.randint(N_CLASSES + 1, self.vocab, (n, self.seq_len), generator=g)
        for i in range(n):  # plant markers 1..4 with a unique most-frequent one
            winner = int(torch.randint(0, N_CLASSES, (1,), generator=g))
            counts = torch.randint(0, 3, (N_CLASSES,), generator=g)
            counts[winner] = int(counts.max()) + 1
            pos = torch.randperm(self.seq_len - 1, generator=g)[: int(counts.sum())] + 1
            ids[i, pos] = torch.repeat_interleave(torch.arange(1, N_CLASSES + 1), counts)
        ids[:, 0] = 0  # [CLS]-like position
        self.ids = ids
        self.labels = torch.stack([torch.bincount(r, minlength=N_CLASSES + 1)[1 : N_CLASSES + 1].argmax() for r in ids])

    def batch(self, slot: int, batch_size: int, seed: int):
        idx = batch_indices(self.n_train, batch_size, slot, seed)
        return {"input_ids": self.ids[idx], "labels": self.labels[idx]}

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return nn.functional.cross_entropy(model(batch["input_ids"]), batch["labels"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        dev = next(model.parameters()).device
        ids, labels = self.ids[self.n_train :].to(dev), self.labels[self.n_train :].to(dev)
        pred = torch.cat([model(ids[i : i + 256]).argmax(-1) for i in range(0, len(ids), 256)])
        return {"metric": float((pred == labels).float().mean()), "accuracy": float((pred == labels).float().mean())}
