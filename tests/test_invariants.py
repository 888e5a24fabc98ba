"""The invariants every ticket carries (#33 item 4): measured on the trained model after its round,
recorded with the round and tagged in MLflow; a breach is recorded as one, never hidden."""

import torch

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import run_chain_with_trainer
from ltvl.core.invariants import describe, ticket_checks
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import MaskEnforcer, Schedule, prune_to_sparsity, select_prunable
from ltvl.pruning.prunable import PrunableSpec

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def test_every_round_of_a_chain_records_its_checks(tmp_path):
    spec = ChainSpec(train=TRAIN, rewind_step=2, schedule=Schedule("geometric", 0.5, 0.75), prunable=PrunableSpec(),
                     context=CONTEXT)
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), TRAIN), tmp_path)
    from ltvl.core.dense import DenseSpec, DenseStore
    theta_sha = DenseStore(tmp_path, DenseSpec.of(spec), writer=False).theta_sha(2)
    for r, want in ((1, 0.5), (2, 0.75)):
        c = got.rounds[r].checks
        assert c["ok"] and c["pruned_nonzero"] == 0 and c["optimizer_state_masked"] is True
        assert c["sparsity_nominal"] == want and abs(c["sparsity_measured"] - want) < 1e-6
        assert c["start_sha256"] == theta_sha  # rewound to the θi file whose hash was verified on load
    again = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), TRAIN), tmp_path)
    assert again.rounds[2].checks == got.rounds[2].checks  # replayed with the record


def test_a_breach_is_measured_and_named():
    model = make_toy_model(0)
    names = list(select_prunable(model, PrunableSpec()))
    params = dict(model.named_parameters())
    mask = prune_to_sparsity({n: params[n].detach() for n in names}, None, 0.5)
    MaskEnforcer(model, mask)  # zeroes the pruned weights
    ok = ticket_checks(model, mask, 0.5, "global", True, "ab" * 32)
    assert ok["ok"] and describe(ok).startswith("pruned weights zero · sparsity 50.0000% = nominal")
    n = names[0]
    with torch.no_grad():
        params[n][~mask.tensors[n]].fill_(0)
        flat = params[n].view(-1)
        flat[int(torch.nonzero(~mask.tensors[n].view(-1))[0])] = 0.5  # one pruned weight revived
    bad = ticket_checks(model, mask, 0.6, "global", False, None)
    assert not bad["ok"] and bad["pruned_nonzero"] == 1 and not bad["sparsity_ok"]
    line = describe(bad)
    assert "BREACH: 1 pruned weights nonzero" in line and "vs nominal 60.0000%" in line
    assert "BREACH: optimizer state nonzero where pruned" in line


def test_the_optimizer_state_check_sees_a_moment_left_where_pruned():
    model = make_toy_model(0)
    names = list(select_prunable(model, PrunableSpec()))
    params = dict(model.named_parameters())
    mask = prune_to_sparsity({n: params[n].detach() for n in names}, None, 0.5)
    enforcer = MaskEnforcer(model, mask)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(5, 30, (2, 16))).sum().backward()
    opt.step()
    assert enforcer.state_masked(opt)  # gradients were masked: the moments are 0 where pruned
    opt.state[params[names[0]]]["exp_avg"].fill_(1.0)
    assert not enforcer.state_masked(opt)


def test_mlflow_tags_each_round_with_its_checks():
    from ltvl.params.resolve import resolve_chain
    from ltvl.tracking.records import round_op

    job = resolve_chain({})
    checks = {"ok": False, "pruned_nonzero": 3, "sparsity_nominal": 0.5, "sparsity_measured": 0.5,
              "sparsity_ok": True, "optimizer_state_masked": True, "start_sha256": "cd" * 32}
    result = {"round": 1, "sparsity": 0.5, "mask_sha256": "ab" * 32, "metric": 0.7, "checks": checks}
    tag = round_op("chain:x", job, result, None, None)["tags"]["ltvl.checks"]
    assert tag.startswith("FAILED · BREACH: 3 pruned weights nonzero · sparsity 50.0000% = nominal")
    assert "started from sha256 cdcdcdcdcdcd" in tag
    assert "ltvl.checks" not in round_op("chain:x", job, {**result, "checks": None}, None, None)["tags"]


def test_a_ray_worker_reports_the_checks_as_the_tag_s_text(tmp_path):
    from ltvl.ray.worker import round_metrics

    spec = ChainSpec(train=TRAIN, schedule=Schedule("one_shot", target_sparsity=0.5), prunable=PrunableSpec(),
                     context=CONTEXT)
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), TRAIN), tmp_path)
    assert round_metrics(got.rounds[1])["checks"].startswith("ok · pruned weights zero · sparsity 50.0000%")
    assert "checks" not in round_metrics(got.rounds[0])  # the dense round has no ticket to check


def test_the_sweep_summary_says_the_invariants_hold_or_names_each_breach():
    from io import StringIO

    from rich.console import Console

    from ltvl.sweep.summary import ChainSummary, _checks, print_summary

    good = {"pruned_nonzero": 0, "sparsity_nominal": 0.5, "sparsity_measured": 0.5, "sparsity_ok": True,
            "optimizer_state_masked": True, "start_sha256": None, "ok": True}
    bad = {**good, "pruned_nonzero": 7, "ok": False}
    records = [{"round": 0}, {"round": 1, "checks": good}, {"round": 2, "checks": bad}]
    assert _checks(records) == {"checked": 2, "breaches": ["round 2: BREACH: 7 pruned weights nonzero · sparsity "
                                                            "50.0000% = nominal · optimizer state masked"]}

    def printed(*recs):
        row = ChainSummary("k", "IMP · vqa", "vqa", "IMP", "done", 3, [(0, 0.0, 0.7), (1, 0.5, 0.7)], 0.7,
                           **_checks([{"round": 0}, *recs]))
        buf = StringIO()
        print_summary([row], "exp", 0.99, Console(file=buf, width=300))
        return buf.getvalue()

    assert "Invariants hold on all 1 tickets measured" in printed({"round": 1, "checks": good})
    out = printed({"round": 1, "checks": good}, {"round": 2, "checks": bad})
    assert "BREACH IMP · vqa, round 2: BREACH: 7 pruned weights nonzero" in out and "Invariants hold" not in out
    assert "Invariants" not in printed({"round": 1})  # records from before checks were measured: no claim
