"""Label-flipping unlearning (the amnesiac paper's "unlearning" baseline).

Each requested sample gets a wrong label drawn at random (seeded; never its own
class), and the model trains briefly on them, optionally mixed with retained
samples that keep their true labels (`retain_ratio` retained per forgotten
sample) to protect what should stay. The true labels are never changed: the
flipped labels live in a separate tensor built for this request.

`partial=true` restricts the update to a layer-wise mask (see `partial_update`);
`stop` decides when it ends (see `stopping`; `epochs` is the most it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from unlearn_cli.methods.base import (
    Cost,
    ForgetContext,
    ForgetOutcome,
    Method,
    PlanFacts,
    param,
    register,
)
from unlearn_cli.methods.partial_update import PartialParams
from unlearn_cli.methods.stopping import StopParams
from unlearn_cli.methods.support import train_forget_set
from unlearn_cli.params import Interval


@dataclass(frozen=True)
class LabelFlipParams(StopParams, PartialParams):
    epochs: int = param(5, "most passes over the forget set and its retained mix")
    lr: float | None = param(None, "learning rate (default: the run's)")
    momentum: float = param(0.0, "SGD momentum (the run's optimizer type is used)")
    batch_size: int | None = param(None, "samples per step (default: the run's)")
    retain_ratio: float = param(0.0, "retained samples mixed in per forgotten sample")

    constraints: ClassVar[dict] = {
        **StopParams.constraints,
        **PartialParams.constraints,
        "epochs": Interval(int, 1, None),
        "lr": [Interval(float, 0, None, closed="neither"), None],
        "momentum": Interval(float, 0, 1, closed="left"),
        "batch_size": [Interval(int, 1, None), None],
        "retain_ratio": Interval(float, 0, None),
    }


def flipped_labels(y: torch.Tensor, ids: torch.Tensor, classes: int, gen) -> torch.Tensor:
    """A copy of `y` where each of `ids` has a random label other than its own."""
    out = y.clone()
    shift = torch.randint(1, classes, (len(ids),), generator=gen)
    out[ids] = (y[ids] + shift) % classes
    return out


def forget(ctx: ForgetContext, params: LabelFlipParams) -> ForgetOutcome:
    data = ctx.data
    gen = torch.Generator().manual_seed(ctx.seed)
    forget_ids = torch.from_numpy(ctx.forget_ids)
    labels = flipped_labels(data.y_train, forget_ids, data.num_classes, gen)
    retain = ctx.retain_ids
    n_mix = min(len(retain), round(params.retain_ratio * len(forget_ids)))
    mixed = retain[torch.randperm(len(retain), generator=gen)[:n_mix]]
    details = train_forget_set(
        ctx, params, torch.cat([forget_ids, mixed]), "label-flip", labels=labels
    )
    return ForgetOutcome(details={"retained_mixed_in": n_mix, **details})


def estimate(facts: PlanFacts, params: LabelFlipParams) -> Cost:
    """Its budget: `epochs` over the forget set and its retained mix."""
    mixed = facts.n_forget + min(facts.n_retain, round(params.retain_ratio * facts.n_forget))
    return facts.passes(params.epochs, mixed, params.batch_size)


METHOD = register(
    Method(
        name="label-flip",
        params=LabelFlipParams,
        forget=forget,
        summary="train briefly on the requested samples relabelled to random wrong classes",
        needs_data=True,
        estimate=estimate,
    )
)
