"""Cost of every route (#33 item 2): FLOPs counted on the real first step (torch's FlopCounterMode),
carried by every round and dense run, summed in the sweep summary with wall time and GPU-hours at
a stated throughput."""

import torch
from torch import nn

from ltvl.core.chain import ChainSpec
from ltvl.core.cost import cost_line, gpu_hours, human_flops
from ltvl.core.imp import run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule
from ltvl.pruning.prunable import PrunableSpec

D, C, B = 6, 4, 8


class LinearTask:
    """y = W x, no bias, inputs that need no gradient: one step is a forward mm (2·B·D·C FLOPs)
    and the weight's gradient mm (2·B·D·C), nothing else."""

    def batch(self, slot, batch_size, seed):
        g = torch.Generator().manual_seed(slot)
        return {"x": torch.randn(batch_size, D, generator=g), "y": torch.randint(0, C, (batch_size,), generator=g)}

    def loss(self, model, batch):
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    def evaluate(self, model):
        return {"metric": 0.0}


def test_a_step_s_flops_are_counted_exactly_on_a_model_done_by_hand():
    torch.manual_seed(0)
    model = nn.Linear(D, C, bias=False)
    out = Trainer(LinearTask(), TrainConfig(steps=3, lr=1e-3, batch_size=B, seed=0, warmup_ratio=0.0)).train(model)
    assert out.flops_per_step == 4 * B * D * C and out.flops == 3 * 4 * B * D * C


def test_rounds_and_the_dense_run_carry_their_flops(tmp_path):
    train = TrainConfig(steps=6, lr=3e-3, batch_size=8, seed=0)
    spec = ChainSpec(train=train, rewind_step=2, schedule=Schedule("geometric", 0.5, 0.5), prunable=PrunableSpec(),
                     context=(("task", "toy"),))
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), train), tmp_path)
    from ltvl.core.dense import DenseSpec, DenseStore
    per_step = DenseStore(tmp_path, DenseSpec.of(spec), writer=False).record().flops_per_step
    assert per_step > 0
    assert got.rounds[0].train_flops == 6 * per_step  # the dense run, trained by this chain
    assert got.rounds[1].train_flops == 4 * per_step  # steps 2..6 of the same model and batch size


def test_the_cost_line_states_its_throughput(monkeypatch):
    assert human_flops(3.2e15) == "3.2 PFLOP" and human_flops(0) == "—" and human_flops(5.5e9) == "5.5 GFLOP"
    assert abs(gpu_hours(3.6e17, 100) - 1.0) < 1e-12
    monkeypatch.setenv("LTVL_GPU_TFLOPS", "50")
    line = cost_line(1200, 3.6e17, 600)
    assert line == ("1,200 optimizer steps, 360 PFLOP, 10.0 min where they ran; ≈ 2 GPU-hours at 50 TFLOP/s "
                    "sustained (LTVL_GPU_TFLOPS)")
    assert "FLOPs not counted" in cost_line(10, 0.0, 1)


def test_the_plan_states_the_sweep_s_flops_once_a_dense_run_counted_them(tmp_path):
    from ltvl.core.dense import DenseRecord, DenseStore
    from ltvl.plan.config import load_config
    from ltvl.plan.plan import build_plan
    from ltvl.vl.datasets import ensure_synthetic

    data = ensure_synthetic("vqa")
    cfg = load_config("rewind_grid", None, ["params.steps=40", f"params.data={data}", "params.preset=tiny",
                                            "grid.rewind_step=[0]", "grid.rate=[0.5]", "params.target_sparsity=0.5"])
    before = build_plan(cfg, tmp_path)  # no dense run yet: the analytic estimate, said to be one
    assert before.flops() and before.describe()[-1].startswith("cost: ≈ ") and "analytic estimate" in \
        before.describe()[-1]
    job = before.chains[0].job
    store = DenseStore(tmp_path, job.dense)
    store.open()
    store.put_result(DenseRecord(store.sha256, {"metric": 0.5}, 1.0, 1.0, 40, "x", [], flops_per_step=1e12), b"")
    after = build_plan(cfg, tmp_path)
    assert after.flops() == after.total_steps * 1e12  # every step of this sweep trains the same model and batch
    assert after.describe()[-1].startswith(f"cost: {human_flops(after.total_steps * 1e12)}, ")  # counted: no ≈
    assert "counted on the stored dense run" in after.describe()[-1]


def test_a_plan_whose_dataset_is_not_here_yet_says_why_it_has_no_estimate(tmp_path):
    from ltvl.plan.config import load_config
    from ltvl.plan.plan import build_plan

    cfg = load_config("rewind_grid", None, ["params.steps=40", f"params.data={tmp_path / 'later'}",
                                            "params.preset=tiny", "grid.rewind_step=[0]", "grid.rate=[0.5]",
                                            "params.target_sparsity=0.5"])
    plan = build_plan(cfg, tmp_path)
    assert plan.flops() is None and "none stored yet, and no estimate" in plan.describe()[-1]
