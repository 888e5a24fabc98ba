"""What one training step costs before anything has run: an analytic count of the matmul FLOPs of the
backbone and the task head for the batch, so ``--dry-run`` states a sweep's cost before its dense run
counts its first step with torch's FlopCounterMode (whose count then replaces this one).

The count is 2 FLOPs per multiply-add of every Linear (and of the attention scores and their
weighted sum), the backward pass twice the forward. Elementwise work, norms and softmax are left
out, as the counter leaves them out; ``tests/test_flops_estimate.py`` holds it to the counter on
each backbone kind."""

from __future__ import annotations

from dataclasses import dataclass

from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.schema import BOX_DIM
from ltvl.vl.models.presets import BackboneSpec, get_preset, minilm_dir

LXMERT_BOX_DIM = 4  # LXMERT's box_fc reads the first 4 of the 7 box dims
BACKWARD = 2.0  # the backward pass: gradients of the inputs and of the weights, each a forward's matmuls


@dataclass(frozen=True)
class StepEstimate:
    flops: float  # one optimizer step, forward and backward
    basis: str  # what it counted, in words, for the plan

    def line(self) -> str:
        return f"analytic estimate ({self.basis}); the dense run counts its first step"


def backbone_shape(spec: BackboneSpec) -> dict[str, int]:
    """Layers, hidden and FFN width the preset builds: the checkpoint's (or MiniLM's) own, read from its
    files, else the preset's fixed shape; the depth as ``layers`` keeps it."""
    preset = get_preset(spec.preset)
    shape = dict(preset.shape or preset.published or {})
    path = spec.checkpoint or (minilm_dir() if preset.name == "minilm" else None)
    if path:
        from ltvl.vl.models.checkpoint import inspect

        _, insp = inspect(path, "params.checkpoint")
        shape.update({k: int(v) for k, v in insp.arch.items() if isinstance(v, int) and v})
        ffn = [s for k, s in insp.shapes.items() if k.endswith("layer.0.intermediate.dense.weight")]
        if ffn:
            shape["intermediate"] = int(ffn[0][0])
    if "layers" in shape:
        shape["layers"] = spec.num_layers or shape["layers"]  # None builds them all (resolve turns `preset` into N)
    return shape


def _encoder_layer(tokens: int, hidden: int, ffn: int) -> float:
    """One self-attention layer over ``tokens``: Q, K, V, output (4h²) and the FFN (2hf) per token,
    plus the scores and the weighted sum (2·tokens·h per token)."""
    return 2.0 * tokens * (4 * hidden * hidden + 2 * hidden * ffn) + 4.0 * tokens * tokens * hidden


def _cross_layer(text: int, image: int, hidden: int, ffn: int) -> float:
    """LXMERT's cross-modality layer: each stream attends to the other, then to itself, then its FFN."""
    both = text + image
    linear = 2.0 * both * (4 * hidden * hidden) * 2 + 2.0 * both * (2 * hidden * ffn)
    attention = 4.0 * hidden * (2 * text * image + text * text + image * image)
    return linear + attention


def backbone_passes(kind: str, shape: dict[str, int], text: int, info: DatasetInfo) -> tuple[float, float, str]:
    """Forward and backward FLOPs of one sequence (``text`` tokens with the example's image), and a phrase
    naming its token counts. Backward is twice forward, less what needs no gradient: the input of the
    image projection (pixels and region features are data), and in LXMERT the vision half of the last
    cross-modality layer (the heads read the language stream's [CLS])."""
    h, f = shape["hidden"], shape["intermediate"]
    pooler = 2.0 * h * h
    if kind == "vilt":
        patch = shape["patch"]
        patches = (int(info.image_size or 0) // patch) ** 2
        image = patches + 1  # the image [CLS]
        embed = 2.0 * patches * 3 * patch * patch * h
        forward = embed + shape["layers"] * _encoder_layer(text + image, h, f) + pooler
        return forward, BACKWARD * forward - embed, f"{text} text + {image} patch tokens"
    regions = int(info.num_regions)
    phrase = f"{text} text + {regions} region tokens"
    if kind == "lxmert":
        embed = 2.0 * regions * (info.feat_dim + LXMERT_BOX_DIM) * h
        forward = (embed + shape["l_layers"] * _encoder_layer(text, h, f)
                   + shape["r_layers"] * _encoder_layer(regions, h, f)
                   + shape["x_layers"] * _cross_layer(text, regions, h, f) + pooler)
        unread = _cross_layer(0, regions, h, f) + 4.0 * h * regions * text  # the last layer's vision stream
        return forward, BACKWARD * (forward - unread) - embed, phrase
    embed = 2.0 * regions * (info.feat_dim + BOX_DIM) * h
    forward = embed + shape["layers"] * _encoder_layer(text + regions, h, f) + pooler
    return forward, BACKWARD * forward - embed, phrase


def head_forward(task, hidden: int, info: DatasetInfo) -> float:
    """The task head's Linears, once per row it reads."""
    from torch import nn

    head = task.build_head(hidden, info)
    return 2.0 * sum(m.in_features * m.out_features for m in head.modules() if isinstance(m, nn.Linear))


def estimate_step(task, backbone: BackboneSpec, max_len: int, examples_per_step: int,
                  info: DatasetInfo) -> StepEstimate | None:
    """One optimizer step's FLOPs, or None where the task's passes per example are not fixed."""
    sequences = task.sequences_per_example()
    if sequences is None:
        return None
    preset = get_preset(backbone.preset)
    shape = backbone_shape(backbone)
    forward, backward, tokens = backbone_passes(preset.kind, shape, max_len, info)
    head = head_forward(task, shape["hidden"], info)
    flops = (forward + backward + (1.0 + BACKWARD) * head) * sequences * examples_per_step
    per = f", {sequences} sequences per example" if sequences != 1 else ""
    return StepEstimate(flops, f"{examples_per_step} examples x {tokens}{per}")


def estimate_for(vl, train, world_size: int = 1) -> StepEstimate | None:
    """The estimate for a resolved chain (its VLSpec and TrainConfig), or None where it cannot be
    made before running: the dataset is not on this machine yet (its regions and image size are in its
    dataset.json), the task's passes per example vary, or adversarial training adds PGD's passes."""
    from ltvl.vl.datasets import local_info
    from ltvl.vl.tasks import get_task

    if train.adversarial.active:
        return None
    info = local_info(vl.data)
    if info is None:
        return None
    task = get_task(vl.task)
    return estimate_step(task, vl.backbone, vl.max_len, train.batch_size * train.grad_accum * world_size, info)
