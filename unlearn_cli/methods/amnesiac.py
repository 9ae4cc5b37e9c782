"""Amnesiac unlearning (Graves et al., AAAI 2021).

theta <- theta - sum of the recorded updates of every step whose batch held a
requested sample (each step at most once across all requests). On a dense store
(`train --keep 1`) this is conventional amnesiac unlearning; on a pruned store it
subtracts the pruned records, which is what `partial-amnesiac` does. Many removed
steps usually call for a little fine-tuning on retained data (`finetune_epochs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearn_cli.methods.base import (
    Cost,
    ForgetContext,
    ForgetOutcome,
    Method,
    PlanFacts,
    param,
    register,
)
from unlearn_cli.methods.support import (
    BN_CONSTRAINTS,
    HEAVY_SHARE,
    finetune_retained,
    require_store,
    steps_to_subtract,
    subtract_steps,
    sum_current_records,
)
from unlearn_cli.params import Interval


@dataclass(frozen=True)
class AmnesiacParams:
    finetune_epochs: int = param(0, "epochs of fine-tuning on retained samples afterwards")
    finetune_lr: float | None = param(None, "fine-tuning learning rate (default: the run's)")
    bn: str = param("recalibrate", "BatchNorm statistics: recalibrate on retained data, or keep")
    bn_samples: int = param(4096, "retained samples used to recalibrate BatchNorm")

    constraints: ClassVar[dict] = {
        "finetune_epochs": Interval(int, 0, None),
        "finetune_lr": [Interval(float, 0, None, closed="neither"), None],
        **BN_CONSTRAINTS,
    }


def forget(ctx: ForgetContext, params: AmnesiacParams) -> ForgetOutcome:
    store = require_store(ctx.store, "amnesiac")
    steps = steps_to_subtract(ctx)
    total, nbytes = sum_current_records(ctx, steps)
    details = {"store_keep": store.info().schedule, "store_dense": store.layout.dense}
    outcome = subtract_steps(ctx, steps, total, nbytes, params.bn, params.bn_samples, details)
    outcome.details |= finetune_retained(ctx, params.finetune_epochs, params.finetune_lr)
    return outcome


def estimate(facts: PlanFacts, params: AmnesiacParams) -> Cost:
    """Only its fine-tuning trains (the subtraction reads the store)."""
    return facts.passes(params.finetune_epochs, facts.n_retain)


METHOD = register(
    Method(
        name="amnesiac",
        params=AmnesiacParams,
        forget=forget,
        summary="subtract the recorded updates of every step that saw a requested sample",
        uses_store=True,
        share_limit=HEAVY_SHARE,
        estimate=estimate,
    )
)
