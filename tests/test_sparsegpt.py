"""SparseGPT (#33): the OBS saliency w²/[H_F⁻¹]_jj chooses the mask, per layer; with retrain: finetune
the kept weights start corrected by the OBS update. Checked against a reference that inverts each
H_F explicitly (no Cholesky trick), and as a chain arm on the toy BERT."""

import pytest
import torch

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import reconstructed_start, run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule, load_mask, prune_to_sparsity
from ltvl.pruning.calibration import input_grams
from ltvl.pruning.obs import BLOCK, DAMP, inverse_cholesky_upper, reconstruct
from ltvl.pruning.prunable import PrunableSpec
from ltvl.pruning.prune import Scope
from tests.helpers.models import MLP

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def damped(h: torch.Tensor) -> torch.Tensor:
    h = h.to(torch.float64).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    return h + DAMP * torch.diagonal(h).mean() * torch.eye(len(h), dtype=torch.float64)


def reference(w: torch.Tensor, h: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(saliencies of the unchanged weights, the OBS-corrected weights), eliminating columns left to
    right with an explicit inverse of H over the columns still free at each step."""
    h, w = damped(h), w.to(torch.float64).clone()
    cols = w.shape[1]
    sal = torch.empty_like(w)
    for j in range(cols):
        inv = torch.linalg.inv(h[j:, j:])
        sal[:, j] = w[:, j] ** 2 / inv[0, 0]  # of the unchanged weights: uses the original w below
    for j in range(cols):
        inv = torch.linalg.inv(h[j:, j:])
        pruned = ~keep[:, j]
        w[pruned, j:] -= (w[pruned, j] / inv[0, 0]).unsqueeze(1) * inv[0].unsqueeze(0)
    w[~keep] = 0.0
    return sal, w


def layer(rows: int, cols: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g,
                                                                                 dtype=torch.float64)
    x[:, 3] = 0.0  # a feature no calibration token uses: its weights are kept as they are
    return torch.randn(rows, cols, generator=g), x.T @ x, x


@pytest.mark.parametrize("block", [BLOCK, 4])  # one block, and corrections carried across blocks
def test_the_obs_update_and_saliency_equal_explicit_inverses(block):
    w, h, _ = layer(5, 11, 40, 0)
    keep = torch.rand(5, 11, generator=torch.Generator().manual_seed(1)) > 0.5
    upper = inverse_cholesky_upper(h)
    want_sal, want_w = reference(w, h, keep)
    from ltvl.pruning.obs import saliency
    torch.testing.assert_close(saliency(w, upper), want_sal, rtol=1e-9, atol=1e-12)
    got = reconstruct(w, upper, keep, block=block)
    torch.testing.assert_close(got.to(torch.float64), want_w.to(torch.float32).to(torch.float64), rtol=1e-5,
                               atol=1e-6)
    assert torch.equal(got[~keep], torch.zeros(int((~keep).sum())))


def test_the_corrected_layer_reproduces_its_outputs_better_than_zeroing():
    w, h, x = layer(6, 12, 80, 2)
    upper = inverse_cholesky_upper(h)
    from ltvl.pruning.obs import saliency
    sal = saliency(w, upper)
    keep = sal > sal.flatten().kthvalue(36).values  # half, by saliency
    fixed = reconstruct(w, upper, keep)
    out = x.to(torch.float32) @ w.T

    def err(v):
        return float((x.to(torch.float32) @ v.T - out).norm())

    assert err(fixed) < 0.8 * err(w * keep)


def test_sparsegpt_masks_are_the_lowest_saliencies_of_each_layer_from_its_calibrated_gram():
    model = MLP()
    x = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(1))
    grams = input_grams(model, ["fc1.weight", "fc2.weight"], lambda m: [m(b) for b in x])
    with torch.no_grad():
        flat = x.reshape(-1, 6).to(torch.float64)
        hidden = torch.relu(model.fc1(x.reshape(-1, 6))).to(torch.float64)
    torch.testing.assert_close(grams["fc1.weight"], flat.T @ flat)
    torch.testing.assert_close(grams["fc2.weight"], hidden.T @ hidden)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    mask = prune_to_sparsity(weights, None, 0.5, method="sparsegpt", scope="layerwise", inputs=grams)
    for n, w in weights.items():
        sal, _ = reference(w, grams[n], torch.ones_like(w, dtype=torch.bool))
        k = round(0.5 * w.numel())
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[torch.sort(sal.flatten().to(torch.float32), stable=True).indices[:k]] = False
        assert torch.equal(mask.tensors[n].flatten(), keep), n
    assert mask.metadata["method"] == "sparsegpt"


def spec(**kw) -> ChainSpec:
    return ChainSpec(train=TRAIN, schedule=Schedule("one_shot", 0.5, 0.75), method="sparsegpt",
                     scope=Scope.LAYERWISE, prunable=PrunableSpec(), context=CONTEXT, calibration_examples=16, **kw)


def run(s: ChainSpec, root, share=()):
    return run_chain_with_trainer(s, lambda: make_toy_model(0), Trainer(ToyTask(), s.train), root,
                                  share_rewinds=share)


def test_sparsegpt_plus_fine_tune_starts_from_the_corrected_weights_and_resumes(tmp_path):
    s = spec(retrain="finetune")
    got = run(s, tmp_path)
    assert [round(r.sparsity, 2) for r in got.rounds] == [0.0, 0.75]
    assert got.rounds[1].checks["ok"]
    # what round 1 started from: θT, its prunable weights corrected for round 1's mask on θT's own Gram
    trainer = Trainer(ToyTask(), TRAIN)
    mask = load_mask(got.rounds[1].mask_path)
    from ltvl.core.train import RewindPoint
    model = make_toy_model(0)
    trainer.train(model)
    start = RewindPoint.fine_tune_from({k: v.detach().clone() for k, v in model.state_dict().items()})
    fixed = reconstructed_start(s, start, mask, lambda: make_toy_model(0), trainer.calibrate)
    grams = input_grams(model, mask.names, lambda m: trainer.calibrate(m, 16))
    params = dict(model.named_parameters())
    for n in mask.names:
        _, want = reference(params[n].detach(), grams[n], mask.tensors[n])
        torch.testing.assert_close(fixed.model[n].to(torch.float64), want.to(torch.float32).to(torch.float64),
                                   rtol=1e-4, atol=1e-5)
        assert not torch.equal(fixed.model[n], params[n].detach() * mask.tensors[n])  # corrected, not just masked
    # the chain's round 1 is that start trained under the mask (and not the merely masked θT)
    from ltvl.pruning.enforce import MaskEnforcer

    def trained_from(point):
        m = make_toy_model(0)
        enforcer = MaskEnforcer(m, mask)
        out = trainer.train(m, enforcer=enforcer, start=point)
        enforcer.remove()
        return out.mean_loss

    assert trained_from(fixed) == got.rounds[1].train_loss  # bit for bit
    assert trained_from(start) != got.rounds[1].train_loss
    # a rewound one-shot SparseGPT ticket keeps the mask only: the same mask, a different start
    ticket = run(spec(), tmp_path)
    assert ticket.rounds[1].mask_sha256 == got.rounds[1].mask_sha256 and ticket.rounds[0].steps_trained == 0
    (got.directory / "rounds" / "001.json").unlink()  # a crash before round 1's record
    again = run(s, tmp_path)
    assert [r.replayed for r in again.rounds] == [True, False]
    assert again.rounds[1].metrics == got.rounds[1].metrics  # the recomputed start is the same start


def test_sparsegpt_in_params_is_per_layer_by_default_and_named():
    from ltvl.params.resolve import resolve_chain
    from ltvl.tracking.records import active_params, chain_name

    job = resolve_chain({"method": "sparsegpt", "schedule": "one_shot", "target_sparsity": 0.5,
                         "retrain": "finetune"})
    assert job.chain.scope == Scope.LAYERWISE
    assert chain_name(job).startswith("SparseGPT")
    assert active_params(job)["calibration_examples"] == 128
