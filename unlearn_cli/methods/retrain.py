"""Retraining from scratch on the retained samples: the exact reference.

Same architecture, theta_0, optimizer, batch size, epochs and seed as the run,
through the same training loop as `unlearn train`; only the forgotten ids are
left out. `-p seed=N` shuffles the batches with another seed: a second exact model,
whose distance from the first is how far two retrainings differ (the noise floor an
evaluation cannot see below). Its wall time is what every other method's speed-up is measured
against. The result no longer contains the recorded trajectory, so amnesiac
methods cannot be applied after it (start them from an earlier version).
"""

from __future__ import annotations

import time
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
from unlearn_cli.methods.support import train_on
from unlearn_cli.params import Interval


@dataclass(frozen=True)
class RetrainParams:
    epochs: int | None = param(None, "training epochs (default: the run's)")
    seed: int | None = param(
        None, "the batch order's seed (default: the run's); another gives a second exact model"
    )

    constraints: ClassVar[dict] = {
        "epochs": [Interval(int, 1, None), None],
        "seed": [Interval(int, 0, None), None],
    }


def forget(ctx: ForgetContext, params: RetrainParams) -> ForgetOutcome:
    cfg = ctx.config
    epochs = params.epochs or cfg.epochs
    seed = cfg.seed if params.seed is None else params.seed
    ctx.model.load_state_dict(ctx.init_state)
    start = time.perf_counter()
    result = train_on(ctx, ctx.retain_ids, epochs, "retrain on retained samples", seed=seed)
    seconds = time.perf_counter() - start
    return ForgetOutcome(
        details={
            "epochs": epochs,
            "seed": seed,
            "steps": result.steps,
            "train_seconds": round(seconds, 3),
        }
    )


def estimate(facts: PlanFacts, params: RetrainParams) -> Cost:
    return facts.passes(params.epochs or facts.config.epochs, facts.n_retain)


METHOD = register(
    Method(
        name="retrain",
        params=RetrainParams,
        forget=forget,
        summary="train from scratch on the retained samples (the exact reference)",
        needs_data=True,
        from_scratch=True,
        estimate=estimate,
    )
)
