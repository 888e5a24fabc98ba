import os

import pytest
import torch
from transformers import BertConfig, BertModel


@pytest.fixture(scope="session", autouse=True)
def ltvl_home(tmp_path_factory):
    """Every test session gets its own LTVL_HOME: datasets ltvl prepares, the prep cache and the
    MLflow store start empty, so nothing an earlier run left in ~/.ltvl can make a test pass."""
    old = os.environ.get("LTVL_HOME")
    path = tmp_path_factory.mktemp("ltvl_home")
    os.environ["LTVL_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LTVL_HOME", None)
    else:
        os.environ["LTVL_HOME"] = old


@pytest.fixture
def tiny_bert():
    """A real transformers BERT small enough for brute-force checks."""
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=20))


def brute_force_prune(weights: dict, alive: dict | None, k: int, scores=None) -> dict:
    """Reference: stable sort of all live scores, take the first k."""
    names = list(weights)
    sc = scores or {n: weights[n].abs().float() for n in names}
    flat = torch.cat([sc[n].flatten() for n in names])
    live = torch.cat([alive[n].flatten() for n in names]) if alive else torch.ones_like(flat, dtype=torch.bool)
    idx = torch.arange(flat.numel())[live]
    chosen = idx[torch.argsort(flat[live], stable=True)][:k]
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[chosen] = True
    res, off = {}, 0
    for n in names:
        res[n] = out[off: off + weights[n].numel()].view(weights[n].shape)
        off += weights[n].numel()
    return res
