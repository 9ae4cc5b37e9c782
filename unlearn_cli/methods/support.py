"""Pieces several methods share: subtracting recorded updates, BatchNorm statistics,
fine-tuning on retained data. Each is small; the loop itself lives in `training`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from unlearn_cli.errors import StoreError
from unlearn_cli.methods.base import ForgetContext
from unlearn_cli.methods.partial_update import build_mask, mask_hooks, partial_details
from unlearn_cli.methods.stopping import Stopper
from unlearn_cli.params import Interval, Options
from unlearn_cli.store import StoreLayout, UpdateStore
from unlearn_cli.store.base import numpy_value_dtype
from unlearn_cli.store.recorder import prune_delta
from unlearn_cli.training import (
    Batch,
    FitResult,
    LossFn,
    StepInfo,
    cross_entropy,
    epoch_batches,
    fit,
    make_optimizer,
    steps_per_epoch,
)

BN_CONSTRAINTS = {"bn": Options(("recalibrate", "keep")), "bn_samples": Interval(int, 1, None)}


def require_store(store: UpdateStore | None, method: str) -> UpdateStore:
    if store is None:
        raise StoreError(
            f"{method} subtracts recorded updates, but this run has no update store "
            "(it was trained with --no-record).",
            hint="use a method that needs no store (e.g. --method retrain), "
            "or train again without --no-record",
        )
    return store


def steps_to_subtract(ctx: ForgetContext) -> np.ndarray:
    """Steps whose batch held a requested id and that no earlier request subtracted."""
    return np.setdiff1d(ctx.affected_steps, ctx.subtracted_steps, assume_unique=True)


def subtract_flat(model: nn.Module, layout: StoreLayout, total: torch.Tensor) -> None:
    """theta <- theta - total, where `total` is laid out like the store's flat vector."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for layer in layout.layers:
            p = params[layer.name]
            seg = total[layer.offset : layer.offset + layer.numel]
            p.sub_(seg.view(layer.shape).to(device=p.device, dtype=p.dtype))


def sum_repruned(
    store: UpdateStore, steps: np.ndarray, target: StoreLayout
) -> tuple[torch.Tensor, int]:
    """Sum of the steps' recorded updates pruned now to `target`'s per-layer k.

    Exact when the store is dense or kept at least `target`'s k per layer: the top-k
    of a top-k' record (k <= k') is the top-k of the full update.
    """
    layout = store.layout
    for have, want in zip(layout.layers, target.layers, strict=True):
        if want.k > have.k:
            raise StoreError(
                f"The store keeps {have.k} entries per step of '{have.name}' (keep "
                f"{have.keep:g}); it cannot be pruned to {want.k} (keep {want.keep:g}).",
                hint="choose a smaller keep, or omit -p keep to use the store's own pruning",
            )
    total = torch.zeros(layout.num_params, dtype=torch.float64)
    nbytes = 0
    itemsize = numpy_value_dtype(layout.value_dtype).itemsize
    for _, indices, values in store.iter_rows(steps):
        nbytes += indices.nbytes + values.numel() * itemsize
        positions = torch.from_numpy(indices.astype(np.int64))
        for i in range(len(positions)):  # one step at a time: memory of one dense update
            row = torch.zeros(layout.num_params)
            row[positions[i]] = values[i]
            idx, kept = prune_delta(row, target)
            total.index_add_(0, idx, kept.double())
    return total.float(), nbytes


@torch.no_grad()
def recalibrate_batchnorm(ctx: ForgetContext, samples: int, batch_size: int = 256) -> int:
    """Re-estimate BatchNorm running statistics on up to `samples` retained samples.

    Subtracting updates moves the weights the statistics were measured for, so
    they are measured again (cumulative average, momentum=None). Returns the
    number of samples used; 0 when the model has no BatchNorm.
    """
    bns = [m for m in ctx.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    retain = ctx.retain_ids
    gen = torch.Generator().manual_seed(ctx.seed)
    ids = retain[torch.randperm(len(retain), generator=gen)[:samples]]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = ctx.model.training
    ctx.model.train()
    for start in range(0, len(ids), batch_size):
        ctx.model(ctx.data.x_train[ids[start : start + batch_size]].to(ctx.device))
    ctx.model.train(was_training)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    return len(ids)


def train_on(
    ctx: ForgetContext,
    ids: torch.Tensor,
    epochs: int,
    lr: float,
    seed: int,
    what: str,
    *,
    labels: torch.Tensor | None = None,
    batch_size: int | None = None,
    momentum: float | None = None,
    loss_fn: LossFn = cross_entropy,
    grad_hook: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    wrap_batches: Callable[[Iterator[Batch]], Iterator[Batch]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    freeze_batchnorm: bool = False,
) -> FitResult:
    """Up to `epochs` passes over `ids` with the run's optimizer, through `training.fit`.

    `labels` replaces the training labels for this call only (label-flip); the
    dataset's own labels are never changed. `momentum` overrides the run's (SGD).
    `wrap_batches` may add samples to each batch or end the passes early (the
    stopping rules); the other hooks go to `fit` as they are. `optimizer` replaces
    the run's (then `lr` and `momentum` are its business).
    """
    cfg = ctx.config
    batch_size = batch_size or cfg.batch_size
    optimizer = optimizer or make_optimizer(
        cfg.optimizer,
        ctx.model.parameters(),
        lr,
        cfg.momentum if momentum is None else momentum,
        cfg.weight_decay,
    )
    batches = epoch_batches(ids, batch_size, epochs, seed)
    if wrap_batches is not None:
        batches = wrap_batches(batches)
    ctx.progress.start(epochs * steps_per_epoch(len(ids), batch_size), what)
    try:
        return fit(
            ctx.model,
            optimizer,
            ctx.data.x_train,
            ctx.data.y_train if labels is None else labels,
            batches,
            loss_fn=loss_fn,
            grad_hook=grad_hook,
            on_step=on_step,
            progress=ctx.progress.advance,
            freeze_batchnorm=freeze_batchnorm,
        )
    finally:
        ctx.progress.stop()


def finetune_retained(ctx: ForgetContext, epochs: int, lr: float | None = None) -> dict:
    """Brief fine-tuning on retained samples (amnesiac's usual follow-up)."""
    if epochs == 0:
        return {"finetune_epochs": 0, "finetune_steps": 0}
    lr = lr or ctx.config.lr
    result = train_on(ctx, ctx.retain_ids, epochs, lr, ctx.seed, "fine-tune on retained samples")
    return {"finetune_epochs": epochs, "finetune_steps": result.steps}


def train_forget_set(
    ctx: ForgetContext,
    params,
    ids: torch.Tensor,
    what: str,
    *,
    labels: torch.Tensor | None = None,
    loss_fn: LossFn = cross_entropy,
    max_grad_norm: float | None = None,
    wrap_batches: Callable[[Iterator[Batch]], Iterator[Batch]] | None = None,
) -> dict:
    """Train on `ids` (the forget set, perhaps with a retained mix) the way label-flip and
    optimize do: inside the partial mask `params` asks for, until its stopping rule ends it.

    `params` carries PartialParams and StopParams plus epochs, lr, momentum, batch_size.
    Returns the receipt details: steps, how it stopped, the mask's fractions.
    """
    mask = build_mask(ctx, params)
    stopper = Stopper(ctx, params)
    hooks = mask_hooks(mask, ctx.model)

    def grad_hook(model: nn.Module) -> None:
        if mask is not None:
            mask.grad_hook(model)
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)

    def batches(stream: Iterator[Batch]) -> Iterator[Batch]:
        stream = stopper.wrap(stream)
        return wrap_batches(stream) if wrap_batches is not None else stream

    result = train_on(
        ctx,
        ids,
        params.epochs,
        params.lr or ctx.config.lr,
        ctx.seed,
        what,
        labels=labels,
        batch_size=params.batch_size,
        momentum=params.momentum,
        loss_fn=loss_fn,
        grad_hook=grad_hook,
        on_step=hooks.get("on_step"),
        wrap_batches=batches,
    )
    return {"steps": result.steps, "stopping": stopper.details(), **partial_details(mask, params)}
