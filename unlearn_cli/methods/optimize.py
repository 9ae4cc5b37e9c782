"""Optimization-based unlearning: train the model away from the forget set.

Objectives, per forget sample with true-class probability p_y:
- `bounded` (default): −log(1 − p_y + ε) − w·H(p). Bounded below (it bottoms out
  once p_y reaches 0), so it cannot run away; the entropy term spreads the
  probability over the other classes rather than on one wrong class.
- `ascent`: gradient ascent on the cross-entropy. Unbounded, so two safeguards:
  each sample's cross-entropy is capped at `max_loss` (samples past it stop
  contributing), and the gradient norm is clipped to `max_grad_norm`.

`retain_weight` > 0 adds a descent term: each step also sees as many retained
samples as forget samples, with cross-entropy weighted by `retain_weight`.
Plain SGD without momentum by default (`momentum`); `partial=true` restricts the
update to a layer-wise mask (see `partial_update`); `stop` decides when it ends
(see `stopping`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

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
from unlearn_cli.params import Interval, Options
from unlearn_cli.training import Batch


@dataclass(frozen=True)
class OptimizeParams(StopParams, PartialParams):
    objective: str = param("bounded", "bounded: −log(1−p_y+ε) − w·entropy; ascent: −cross-entropy")
    epochs: int = param(20, "most passes over the forget set (all of them with stop=budget)")
    lr: float | None = param(None, "learning rate (default: the run's)")
    lr_factor: float = param(1.0, "multiplies the learning rate (the run's, or lr)")
    momentum: float = param(0.0, "SGD momentum (the run's optimizer type is used)")
    batch_size: int | None = param(None, "forget samples per step (default: the run's)")
    epsilon: float = param(0.05, "bounded: ε in −log(1−p_y+ε)")
    entropy_weight: float = param(0.2, "bounded: w, the weight of the entropy term")
    max_loss: float = param(5.0, "ascent: cap on each sample's cross-entropy")
    max_grad_norm: float | None = param(5.0, "clip the gradient norm to this (none: no clipping)")
    retain_weight: float = param(0.0, "weight of a descent term on as many retained samples")

    constraints: ClassVar[dict] = {
        **StopParams.constraints,
        **PartialParams.constraints,
        "objective": Options(("bounded", "ascent")),
        "epochs": Interval(int, 1, None),
        "lr": [Interval(float, 0, None, closed="neither"), None],
        "lr_factor": Interval(float, 0, None, closed="neither"),
        "momentum": Interval(float, 0, 1, closed="left"),
        "batch_size": [Interval(int, 1, None), None],
        "epsilon": Interval(float, 0, None, closed="neither"),
        "entropy_weight": Interval(float, 0, None),
        "max_loss": Interval(float, 0, None, closed="neither"),
        "max_grad_norm": [Interval(float, 0, None, closed="neither"), None],
        "retain_weight": Interval(float, 0, None),
    }


def bounded_loss(logits: torch.Tensor, y: torch.Tensor, eps: float, w: float) -> torch.Tensor:
    """Mean of −log(1 − p_y + ε) − w·H(p) over the samples."""
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    p_y = p.gather(1, y[:, None]).squeeze(1)
    entropy = -(p * logp).sum(1)
    return (-torch.log1p(eps - p_y) - w * entropy).mean()


def ascent_loss(logits: torch.Tensor, y: torch.Tensor, max_loss: float) -> torch.Tensor:
    """Minus the mean cross-entropy, each sample's capped at `max_loss`."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return -ce.clamp(max=max_loss).mean()


def make_loss(params: OptimizeParams, forget_ids: torch.Tensor):
    def forget_loss(logits, y):
        if params.objective == "ascent":
            return ascent_loss(logits, y, params.max_loss)
        return bounded_loss(logits, y, params.epsilon, params.entropy_weight)

    def loss(logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if params.retain_weight == 0:
            return forget_loss(logits, y)
        is_forget = torch.isin(ids, forget_ids.to(ids.device))
        retained = F.cross_entropy(logits[~is_forget], y[~is_forget])
        return forget_loss(logits[is_forget], y[is_forget]) + params.retain_weight * retained

    return loss


def with_retained(retain: torch.Tensor, seed: int):
    """Append as many randomly drawn retained ids to each batch."""
    gen = torch.Generator().manual_seed(seed + 1)

    def wrap(batches: Iterator[Batch]) -> Iterator[Batch]:
        for b in batches:
            extra = retain[torch.randint(len(retain), (len(b.ids),), generator=gen)]
            yield Batch(b.step, b.epoch, torch.cat([b.ids, extra]))

    return wrap


def forget(ctx: ForgetContext, params: OptimizeParams) -> ForgetOutcome:
    if params.lr_factor != 1.0:
        params = replace(params, lr=(params.lr or ctx.config.lr) * params.lr_factor)
    forget_ids = torch.from_numpy(np.asarray(ctx.forget_ids, dtype=np.int64))
    retained = with_retained(ctx.retain_ids, ctx.seed) if params.retain_weight > 0 else None
    details = train_forget_set(
        ctx,
        params,
        forget_ids,
        f"optimize ({params.objective})",
        loss_fn=make_loss(params, forget_ids),
        max_grad_norm=params.max_grad_norm,
        wrap_batches=retained,
    )
    return ForgetOutcome(details={"objective": params.objective, **details})


def estimate(facts: PlanFacts, params: OptimizeParams) -> Cost:
    """Its budget: `epochs` over the forget set (as many retained samples beside them with
    a descent term); the stopping rule usually ends it sooner."""
    cost = facts.passes(params.epochs, facts.n_forget, params.batch_size)
    mix = 2 if params.retain_weight > 0 else 1
    return Cost(cost.training_steps, cost.training_samples * mix)


METHOD = register(
    Method(
        name="optimize",
        params=OptimizeParams,
        forget=forget,
        summary="train away from the forget set (bounded loss or capped ascent)",
        needs_data=True,
        estimate=estimate,
    )
)
