"""Fine-tuning on the retained samples only: the catastrophic-forgetting baseline.

Starts from the current version and trains on retained samples with the run's
optimizer settings (a fresh optimizer), hoping the forgotten samples' influence
fades. Cheap and data-hungry; it gives no guarantee, which is why it is a baseline.
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
from unlearn_cli.methods.support import finetune_retained
from unlearn_cli.params import Interval


@dataclass(frozen=True)
class FinetuneParams:
    epochs: int = param(1, "passes over the retained samples")
    lr: float | None = param(None, "learning rate (default: the run's)")

    constraints: ClassVar[dict] = {
        "epochs": Interval(int, 1, None),
        "lr": [Interval(float, 0, None, closed="neither"), None],
    }


def forget(ctx: ForgetContext, params: FinetuneParams) -> ForgetOutcome:
    return ForgetOutcome(details=finetune_retained(ctx, params.epochs, params.lr))


def estimate(facts: PlanFacts, params: FinetuneParams) -> Cost:
    return facts.passes(params.epochs, facts.n_retain)


METHOD = register(
    Method(
        name="finetune",
        params=FinetuneParams,
        forget=forget,
        summary="fine-tune on the retained samples only (the catastrophic-forgetting baseline)",
        needs_data=True,
        estimate=estimate,
    )
)
