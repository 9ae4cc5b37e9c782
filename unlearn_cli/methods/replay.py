"""Replay: the quality of retraining at the cost of the affected steps only.

1. Subtract the current record of every step whose batch held a requested sample
   (the run's record, as stored or pruned now to `keep`, or the record of the replay
   that last re-ran it), as `partial-amnesiac` or `amnesiac` would.
2. Re-run exactly those steps, in their original order, on their original batches
   with every forgotten sample removed, through the one training loop: the retained
   samples of an affected batch keep their contribution. Emptied batches are skipped
   (there is nothing left to learn from). Plain SGD (`momentum=0`) at the run's
   learning rate by default; the run's optimizer type and weight decay.
3. Record each re-run step, pruned like the run's record, in the version's
   `replay.zarr`: a later request that touches a replayed step subtracts that
   record, not the original, and replays the step again without both requests'
   samples. A step once subtracted without a replay (by amnesiac) stays removed.

It reads the training samples of the affected batches only. Its cost is the
affected steps' forward and backward passes: near a retrain's when a request
touches most steps (`auto` then picks another method).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
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
from unlearn_cli.methods.support import (
    BN_CONSTRAINTS,
    REPLAY_NAME,
    recalibrate_batchnorm,
    require_store,
    steps_to_subtract,
    subtract_flat,
    sum_current_records,
)
from unlearn_cli.params import Interval, Options
from unlearn_cli.store import (
    KeepSchedule,
    MemoryUpdateStore,
    UpdateStore,
    ZarrUpdateStore,
    make_layout,
)
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.train_config import optimizer_for
from unlearn_cli.training import Batch, Hooks, fit, steps_per_epoch


@dataclass(frozen=True)
class ReplayParams:
    lr: float | None = param(None, "learning rate of the re-run steps (default: the run's)")
    momentum: float = param(0.0, "SGD momentum of the re-run steps (a fresh optimizer)")
    keep: float | None = param(None, "subtract the record pruned now to this (default: as stored)")
    schedule: str = param("depth", "with keep: uniform, or depth (fewer in the first layers)")
    bn: str = param("recalibrate", "BatchNorm statistics: recalibrate on retained data, or keep")
    bn_samples: int = param(4096, "retained samples used to recalibrate BatchNorm")

    constraints: ClassVar[dict] = {
        "lr": [Interval(float, 0, None, closed="neither"), None],
        "momentum": Interval(float, 0, 1, closed="left"),
        "keep": [Interval(float, 0, 1, closed="right"), None],
        "schedule": Options(("uniform", "depth")),
        **BN_CONSTRAINTS,
    }


def replay_batches(
    store: UpdateStore, steps: np.ndarray, exclude: np.ndarray
) -> tuple[list[Batch], int]:
    """The batches of `steps` (ascending) without the `exclude` ids; emptied ones dropped.
    Returns (batches, how many were emptied)."""
    index = store.index()
    batches, emptied = [], 0
    for step in steps.tolist():
        ids = index.batch(step).astype(np.int64)
        kept = ids[~np.isin(ids, exclude)]
        if kept.size == 0:
            emptied += 1
            continue
        batches.append(Batch(step, int(index.epochs[step]), torch.from_numpy(kept)))
    return batches, emptied


def forget(ctx: ForgetContext, params: ReplayParams) -> ForgetOutcome:
    store = require_store(ctx.store, "replay")
    steps = steps_to_subtract(ctx)
    target = None
    if params.keep is not None:
        schedule = KeepSchedule(params.schedule, params.keep)
        target = make_layout(ctx.model, schedule, store.layout.value_dtype)
    total, nbytes = sum_current_records(ctx, steps, target)
    subtract_flat(ctx.model, store.layout, total)
    batches, emptied = replay_batches(store, steps, ctx.forgotten_ids)
    record = rerun(ctx, store, batches, params)
    replayed = np.array([b.step for b in batches], dtype=np.int64)
    retrain = ctx.config.epochs * steps_per_epoch(len(ctx.retain_ids), ctx.config.batch_size)
    details = {
        "steps_subtracted": int(steps.size),
        "steps_replayed": int(replayed.size),
        "steps_emptied": emptied,
        "samples_read": int(sum(len(b.ids) for b in batches)),
        "replayed_records_subtracted": int(np.isin(steps, list(ctx.replayed)).sum()),
        "cost": {"replay_steps": int(replayed.size), "retrain_steps": retrain},
        "pruning": "as recorded" if params.keep is None else {"keep": params.keep},
    }
    if params.bn == "recalibrate":
        details["bn_recalibrated_on"] = recalibrate_batchnorm(ctx, params.bn_samples)
    fingerprint = ctx.run.meta["model"]["fingerprint"]
    return ForgetOutcome(
        subtracted_steps=steps,
        replayed_steps=replayed,
        bytes_read=nbytes,
        details=details,
        files={REPLAY_NAME: lambda path: write_record(path, record, replayed, fingerprint)},
    )


def rerun(
    ctx: ForgetContext, store: UpdateStore, batches: list[Batch], params: ReplayParams
) -> UpdateStore:
    """One optimizer step per batch through the one loop, each recorded like the run's."""
    info = store.info()
    record = MemoryUpdateStore(
        info.layout, n_samples=ctx.n_train, planned_steps=len(batches), schedule=info.schedule
    )
    trainable = [p for p in ctx.model.parameters() if p.requires_grad]
    recorder = Recorder(record, trainable, rows_per_flush=max(1, len(batches)))
    ctx.progress.start(len(batches), f"replay {len(batches)} of {info.committed_steps} steps")
    try:
        fit(
            ctx.model,
            optimizer_for(ctx.config, ctx.model, params.lr, params.momentum),
            ctx.data.x_train,
            ctx.data.y_train,
            iter(batches),
            Hooks(on_step=recorder.on_step, class_weights=ctx.class_weights),
            ctx.progress.advance,
        )
        recorder.close(complete=True)
    finally:
        ctx.progress.stop()
    return record


def write_record(path: Path, record: UpdateStore, steps: np.ndarray, fingerprint: str) -> None:
    """The re-run steps' records as an update store whose row i is step `steps[i]`."""
    info = record.info()
    out = ZarrUpdateStore.create(
        path,
        info.layout,
        n_samples=info.n_samples,
        planned_steps=len(steps),
        model_fingerprint=fingerprint,
        schedule=info.schedule,
        extra={"kind": "replay", "replayed_steps": steps.tolist()},
    )
    if len(steps):
        out.append(record.export_rows(np.arange(len(steps))))
    out.finalize()


def estimate(facts: PlanFacts, params: ReplayParams) -> Cost:
    """One step per affected batch that keeps a sample, over the samples it keeps."""
    if facts.store is None:
        return Cost()
    index = facts.store.index()
    kept = [np.setdiff1d(index.batch(s), facts.forgotten).size for s in facts.steps.tolist()]
    return Cost(sum(1 for k in kept if k), int(sum(kept)))


METHOD = register(
    Method(
        name="replay",
        params=ReplayParams,
        forget=forget,
        summary="subtract the affected steps' records, then re-run those steps without the "
        "forgotten samples (reads the affected batches' training data)",
        uses_store=True,
        needs_data=True,
        estimate=estimate,
    )
)
