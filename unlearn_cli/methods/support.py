"""Pieces several methods share: subtracting recorded updates, BatchNorm statistics,
fine-tuning on retained data. Each is small; the loop itself lives in `training`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from unlearn_cli.cpu_layout import channels_last_on_cpu
from unlearn_cli.errors import StoreError
from unlearn_cli.methods.base import ForgetContext, ForgetOutcome
from unlearn_cli.methods.partial_update import build_mask, partial_details
from unlearn_cli.methods.stopping import Stopper
from unlearn_cli.params import Interval, Options
from unlearn_cli.store import StoreLayout, UpdateStore, ZarrUpdateStore
from unlearn_cli.store.base import MISSING_INDEX, numpy_value_dtype
from unlearn_cli.store.selection import prune_delta
from unlearn_cli.train_config import optimizer_for
from unlearn_cli.training import Batch, FitResult, Hooks, LossFn, cross_entropy, train_epochs

# Above this share of affected steps, subtracting updates removes much of what the model
# learned. The amnesiac paper: accuracy holds while about 1% of batches are removed. Our
# MNIST/LeNet sweep (benchmarks/results/forget.md): at 3.6% of steps conventional amnesiac
# lost 0.7 points of test accuracy, at 11% it lost 34 (partial: 7; replay: 2).
HEAVY_SHARE = 0.05
REPLAY_NAME = "replay.zarr"  # a replay version's record of the steps it re-ran
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
    """Steps whose batch held a requested id and whose current record is still in the
    model: never subtracted, or re-recorded by an earlier replay."""
    return steps_to_subtract_from(ctx.affected_steps, ctx.subtracted_steps, ctx.replayed)


def steps_to_subtract_from(
    affected: np.ndarray, subtracted: np.ndarray, replayed: dict[int, int]
) -> np.ndarray:
    gone = np.setdiff1d(subtracted, np.fromiter(replayed, np.int64))
    return np.setdiff1d(affected, gone, assume_unique=True)


def sum_current_records(
    ctx: ForgetContext, steps: np.ndarray, target: StoreLayout | None = None
) -> tuple[torch.Tensor, int]:
    """The sum of each step's current record: the run's (pruned to `target` if given), or
    the replay record of the version that last re-ran it. Returns (flat sum, bytes read)."""
    store = require_store(ctx.store, "this method")
    by_version: dict[int, list[int]] = {}
    for step in steps.tolist():
        if step in ctx.replayed:
            by_version.setdefault(ctx.replayed[step], []).append(step)
    original = np.setdiff1d(steps, np.fromiter(ctx.replayed, np.int64))
    if target is None:
        total, nbytes = store.sum_updates(original)
    else:
        total, nbytes = sum_repruned(store, original, target)
    for version, replayed in by_version.items():
        record = ZarrUpdateStore.open(ctx.run.version_dir(version) / REPLAY_NAME)
        rows = np.searchsorted(record.info().extra["replayed_steps"], replayed)
        more, more_bytes = record.sum_updates(rows)
        total, nbytes = total + more, nbytes + more_bytes
    return total, nbytes


def subtract_flat(model: nn.Module, layout: StoreLayout, total: torch.Tensor) -> None:
    """theta <- theta - total, where `total` is laid out like the store's flat vector."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for layer in layout.layers:
            p = params[layer.name]
            seg = total[layer.offset : layer.offset + layer.numel]
            p.sub_(seg.view(layer.shape).to(device=p.device, dtype=p.dtype))


def subtract_steps(
    ctx: ForgetContext,
    steps: np.ndarray,
    total: torch.Tensor,
    nbytes: int,
    bn: str,
    bn_samples: int,
    details: dict,
) -> ForgetOutcome:
    """Subtract `total` (the summed records of `steps`), then deal with BatchNorm."""
    store = require_store(ctx.store, "this method")
    subtract_flat(ctx.model, store.layout, total)
    if bn == "recalibrate":
        details["bn_recalibrated_on"] = recalibrate_batchnorm(ctx, bn_samples)
    return ForgetOutcome(subtracted_steps=steps, bytes_read=nbytes, details=details)


def sum_repruned(
    store: UpdateStore, steps: np.ndarray, target: StoreLayout
) -> tuple[torch.Tensor, int]:
    """Sum of the steps' recorded updates pruned now to `target`'s per-layer k.

    Exact when the store is dense or kept at least `target`'s k per layer: the top-k
    of a top-k' record (k <= k') is the top-k of the full update. A format 3 row keeps
    the m largest entries of a layer, m within the tolerance of the store's k; where m
    falls below `target`'s k, the row's m entries are kept.
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
        used = indices != MISSING_INDEX  # format 3: columns a row left unused
        for i in range(len(indices)):  # one step at a time: memory of one dense update
            row = torch.zeros(layout.num_params)
            row[torch.from_numpy(indices[i][used[i]].astype(np.int64))] = values[i][used[i]]
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
    x = ctx.data.x_train
    # only the statistics move: no autograd graph, and the training loop's layout
    with torch.no_grad(), channels_last_on_cpu(ctx.model, x[ids[:1]].to(ctx.device)):
        for start in range(0, len(ids), batch_size):
            ctx.model(x[ids[start : start + batch_size]].to(ctx.device))
    ctx.model.train(was_training)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    return len(ids)


def train_on(
    ctx: ForgetContext,
    ids: torch.Tensor,
    epochs: int,
    what: str,
    *,
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    labels: torch.Tensor | None = None,
    hooks: Hooks | None = None,
    wrap_batches: Callable[[Iterator[Batch]], Iterator[Batch]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> FitResult:
    """Up to `epochs` passes over `ids` with the run's optimizer, through the one loop.

    `lr`, `momentum`, `batch_size` and `seed` default to the run's (the seed to the
    request's). `labels` replaces the training labels for this call only
    (label-flip); the dataset's own labels are never changed. `optimizer`
    replaces the run's (then `lr` and `momentum` are its business). Without `hooks`, the
    loss is the run's own (its class weights, if it has any); a method that brings its
    own hooks brings its own loss.
    """
    return train_epochs(
        ctx.model,
        optimizer or optimizer_for(ctx.config, ctx.model, lr, momentum),
        ctx.data.x_train,
        ctx.data.y_train if labels is None else labels,
        ids,
        epochs=epochs,
        batch_size=batch_size or ctx.config.batch_size,
        seed=ctx.seed if seed is None else seed,
        hooks=hooks or Hooks(class_weights=ctx.class_weights),
        wrap_batches=wrap_batches,
        progress=ctx.progress,
        what=what,
    )


def finetune_retained(ctx: ForgetContext, epochs: int, lr: float | None = None) -> dict:
    """Brief fine-tuning on retained samples (amnesiac's usual follow-up)."""
    if epochs == 0:
        return {"finetune_epochs": 0, "finetune_steps": 0}
    result = train_on(ctx, ctx.retain_ids, epochs, "fine-tune on retained samples", lr=lr)
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

    def grad_hook(model: nn.Module) -> None:
        if mask is not None:
            mask.grad_hook(model)
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)

    def batches(stream: Iterator[Batch]) -> Iterator[Batch]:
        stream = stopper.wrap(stream)
        return wrap_batches(stream) if wrap_batches is not None else stream

    restore = mask.hooks(ctx.model).on_step if mask is not None else None
    result = train_on(
        ctx,
        ids,
        params.epochs,
        what,
        lr=params.lr,
        momentum=params.momentum,
        batch_size=params.batch_size,
        labels=labels,
        hooks=Hooks(loss_fn=loss_fn, grad_hook=grad_hook, on_step=restore),
        wrap_batches=batches,
    )
    return {"steps": result.steps, "stopping": stopper.details(), **partial_details(mask, params)}
