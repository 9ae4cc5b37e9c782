"""Layer-wise partial updates (Gogineni & Nadimi 2024) for the methods that train.

With `-p partial=true` each trainable tensor may change only a fraction of its
entries; every other entry stays bit-identical (its gradient is zeroed and its
value restored after each step, so weight decay or Adam cannot move it either).

How many: the same schedules as the update store. `depth` (the default) rises
linearly with module depth from `fraction_min` (first layer; default fraction/10)
to `fraction` (output layer), so the first layers, which hold features every
class shares, change least. `uniform` gives every tensor `fraction`.
Each tensor updates k = max(1, ceil(fraction_l * n_l)) entries.

Which: `saliency` (the default) takes the entries with the largest |gradient| of
the cross-entropy summed over the forget set (at most SALIENCY_SAMPLES of it,
drawn with the seed), at the start: the weights that fit those samples most.
`random` takes a seeded random subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.methods.base import ForgetContext
from unlearn_cli.param_mask import ParamMask
from unlearn_cli.params import Interval, Options, param
from unlearn_cli.store.layout import KeepSchedule, kept_count


@dataclass(frozen=True)
class PartialParams:
    """Mixed into the params of every method that trains on the forget set."""

    partial: bool = param(False, "update only a fraction of each layer's parameters")
    fraction: float = param(0.1, "partial: fraction each layer updates (depth: the last layer's)")
    fraction_min: float | None = param(None, "partial, depth: first layer's (default fraction/10)")
    schedule: str = param("depth", "partial: depth (fewer in the first layers) or uniform")
    select: str = param("saliency", "partial: saliency (largest |grad| on forget set) or random")

    constraints: ClassVar[dict] = {
        "fraction": Interval(float, 0, 1, closed="right"),
        "fraction_min": [Interval(float, 0, 1, closed="right"), None],
        "schedule": Options(("depth", "uniform")),
        "select": Options(("saliency", "random")),
    }


def layer_fractions(model: nn.Module, params: PartialParams) -> dict[str, float]:
    """The fraction of each trainable tensor that may change under `params`."""
    low = params.fraction_min if params.schedule == "depth" else None
    return KeepSchedule(params.schedule, params.fraction, low).fractions(model)


SALIENCY_SAMPLES = 1024


def forget_saliency(ctx: ForgetContext, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """|d/dθ Σ cross-entropy| over (a sample of) the forget set, in eval mode."""
    model = ctx.model
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    ids = torch.from_numpy(ctx.forget_ids)
    if len(ids) > SALIENCY_SAMPLES:
        gen = torch.Generator().manual_seed(ctx.seed)
        ids = ids[torch.randperm(len(ids), generator=gen)[:SALIENCY_SAMPLES]]
    for start in range(0, len(ids), batch_size):
        idx = ids[start : start + batch_size]
        logits = model(ctx.data.x_train[idx].to(ctx.device))
        F.cross_entropy(logits, ctx.data.y_train[idx].to(ctx.device), reduction="sum").backward()
    grads = {
        name: (p.grad.abs() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return grads


def build_mask(ctx: ForgetContext, params: PartialParams) -> ParamMask | None:
    """The mask `params` asks for, or None when the update is not partial."""
    if not params.partial:
        return None
    fractions = layer_fractions(ctx.model, params)
    scores = forget_saliency(ctx) if params.select == "saliency" else None
    gen = torch.Generator().manual_seed(ctx.seed)
    masks, frozen = {}, {}
    for name, p in ctx.model.named_parameters():
        if not p.requires_grad:
            continue
        k = kept_count(fractions[name], p.numel())
        if scores is None:
            chosen = torch.randperm(p.numel(), generator=gen)[:k]
        else:
            chosen = torch.topk(scores[name].flatten().cpu(), k, sorted=False).indices
        mask = torch.zeros(p.numel(), dtype=torch.bool)
        mask[chosen] = True
        masks[name] = mask.view(p.shape).to(p.device)
        frozen[name] = p.detach().clone()
    return ParamMask(masks, frozen)


def partial_details(mask: ParamMask | None, params: PartialParams) -> dict:
    if mask is None:
        return {"partial": False}
    return {
        "partial": True,
        "schedule": params.schedule,
        "select": params.select,
        "updated_fraction": mask.updated_fractions(),
    }
