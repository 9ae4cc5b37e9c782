"""Partial amnesiac unlearning (Gogineni & Nadimi 2024).

Subtract only the layer-wise pruned updates of the steps that saw a requested
sample: from a store pruned at training time (no `keep`), or from a denser store
pruned now to `keep` with a `schedule`, so both variants can be compared on one
training run. No fine-tuning: the claim under test is that none is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearn_cli.methods.base import ForgetContext, ForgetOutcome, Method, param, register
from unlearn_cli.methods.support import (
    BN_CONSTRAINTS,
    HEAVY_SHARE,
    require_store,
    steps_to_subtract,
    subtract_steps,
    sum_current_records,
)
from unlearn_cli.params import Interval, Options
from unlearn_cli.store import KeepSchedule, make_layout


@dataclass(frozen=True)
class PartialAmnesiacParams:
    keep: float | None = param(None, "prune the record now to this fraction (default: as stored)")
    schedule: str = param("depth", "with keep: uniform, or depth (fewer in the first layers)")
    keep_min: float | None = param(None, "depth schedule: first layer's fraction (default keep/10)")
    bn: str = param("recalibrate", "BatchNorm statistics: recalibrate on retained data, or keep")
    bn_samples: int = param(4096, "retained samples used to recalibrate BatchNorm")

    constraints: ClassVar[dict] = {
        "keep": [Interval(float, 0, 1, closed="right"), None],
        "schedule": Options(("uniform", "depth")),
        "keep_min": [Interval(float, 0, 1, closed="right"), None],
        **BN_CONSTRAINTS,
    }


def forget(ctx: ForgetContext, params: PartialAmnesiacParams) -> ForgetOutcome:
    store = require_store(ctx.store, "partial-amnesiac")
    steps = steps_to_subtract(ctx)
    details: dict = {"store_keep": store.info().schedule}
    if params.keep is None:
        total, nbytes = sum_current_records(ctx, steps)
        details["pruning"] = "as recorded"
    else:
        keep_min = params.keep_min if params.schedule == "depth" else None
        schedule = KeepSchedule(params.schedule, params.keep, keep_min)
        target = make_layout(ctx.model, schedule, store.layout.value_dtype)
        total, nbytes = sum_current_records(ctx, steps, target)
        details["pruning"] = schedule.to_dict()
    return subtract_steps(ctx, steps, total, nbytes, params.bn, params.bn_samples, details)


METHOD = register(
    Method(
        name="partial-amnesiac",
        params=PartialAmnesiacParams,
        forget=forget,
        summary="subtract only the layer-wise pruned updates of the steps that saw the samples",
        uses_store=True,
        share_limit=HEAVY_SHARE,
    )
)
