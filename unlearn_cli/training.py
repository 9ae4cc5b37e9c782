"""The one training loop. `train`, `retrain`, pruning and every method that trains use it,
through `train_epochs` (seeded batches over sample ids, the run's optimizer, progress).

Methods plug in through hooks (`Hooks`) and never copy the loop:
- `loss_fn(logits, y, ids) -> loss` what to minimise on a batch (default cross-entropy);
                                   `ids` are the batch's sample ids, for losses that treat
                                   forgotten and retained samples differently,
- `grad_hook(model)`               edit gradients after backward (masks, projections),
- `on_step(StepInfo)`              observe each finished optimizer step (the recorder),
- `freeze_batchnorm`               keep BatchNorm in eval mode (statistics frozen),
- `class_weights`                  per-class weights of the default cross-entropy (the
                                   run's `class_weight`, from `class_weights()`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.cpu_layout import channels_last_on_cpu
from unlearn_cli.distributed import SINGLE, World
from unlearn_cli.errors import UnlearnError
from unlearn_cli.progress import NullProgress, Progress

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


class TrainingDiverged(UnlearnError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Batch:
    step: int  # global optimizer step, 0-based
    epoch: int
    ids: torch.Tensor  # (B,) int64 sample ids


@dataclass(frozen=True)
class StepInfo:
    batch: Batch
    loss: float


@dataclass
class FitResult:
    steps: int = 0
    last_loss: float = float("nan")
    train_accuracy: float = float("nan")  # running accuracy over the last epoch
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Hooks:
    """How a caller changes what `fit` does without copying it."""

    loss_fn: LossFn = cross_entropy
    grad_hook: Callable[[nn.Module], None] | None = None
    on_step: Callable[[StepInfo], None] | None = None
    freeze_batchnorm: bool = False
    world: World = SINGLE  # data-parallel ranks (distributed.py); one process by default
    class_weights: torch.Tensor | None = None  # of the default loss (cross_entropy) only


def epoch_batches(ids: torch.Tensor, batch_size: int, epochs: int, seed: int) -> Iterator[Batch]:
    """Shuffled batches of sample ids; the order depends only on (ids, batch_size, seed)."""
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        order = ids[torch.randperm(len(ids), generator=gen)]
        for start in range(0, len(order), batch_size):
            yield Batch(step, epoch, order[start : start + batch_size])
            step += 1


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Iterator[Batch],
    hooks: Hooks = Hooks(),
    progress: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Run optimizer steps over `batches`; x/y are indexed by the batches' sample ids.

    `x` (N, C, H, W) and `y` (N,) are moved to the model's device once. With
    `hooks.freeze_batchnorm`, BatchNorm layers stay in eval mode: they normalise with their
    running statistics and do not update them.
    """
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    weights, loss_fn = None, hooks.loss_fn
    if hooks.class_weights is not None and loss_fn is cross_entropy:  # the default loss only
        weights = hooks.class_weights.to(device)
        loss_fn = weighted_cross_entropy(weights)
    result = FitResult()
    correct = seen = 0
    epoch = -1
    model.train()
    if hooks.freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    with channels_last_on_cpu(model, x[:1]):  # the loop's layout; given back as it was
        for batch in batches:
            if batch.epoch != epoch:  # running accuracy restarts each epoch
                epoch, correct, seen = batch.epoch, 0, 0
            ids, weight = rank_part(batch, hooks.world, weights, y)
            idx = ids.to(device)
            yb = y[idx]
            logits, loss_value = step(model, optimizer, x[idx], yb, idx, loss_fn, weight, hooks)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"Training diverged at step {batch.step}: the loss is {loss_value}.",
                    hint="lower the learning rate (--lr)",
                )
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            result.steps += 1
            result.last_loss = loss_value
            result.losses.append(loss_value)
            if hooks.on_step is not None:
                hooks.on_step(StepInfo(batch, loss_value))
            if progress is not None:
                progress(1, {"loss": loss_value, "acc": correct / seen, "epoch": batch.epoch})
    result.train_accuracy = correct / seen if seen else float("nan")
    return result


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    idx: torch.Tensor,
    loss_fn: LossFn,
    weight: float,
    hooks: Hooks,
) -> tuple[torch.Tensor, float]:
    """One optimizer step on a batch: (its logits, detached, and its loss)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(xb)
    loss = loss_fn(logits, yb, idx)
    (loss * weight if weight != 1.0 else loss).backward()
    if hooks.grad_hook is not None:
        hooks.grad_hook(model)
    optimizer.step()
    return logits.detach(), float(loss.detach())


def rank_part(
    batch: Batch, world: World, weights: torch.Tensor | None, y: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """This rank's ids of the global batch and the weight of its loss (1 alone): its
    share of the batch, or with class weights its share of the batch's weights."""
    if world.size == 1:
        return batch.ids, 1.0
    ids = world.local_part(batch.ids)
    if weights is None:
        weight = world.loss_weight(len(ids), len(batch.ids))
    else:
        local, total = (float(weights[y[i.to(y.device)]].sum()) for i in (ids, batch.ids))
        weight = world.loss_weight(local, total) if total else 0.0
    if len(ids) == 0:  # a last batch smaller than the world: join with no weight
        ids = batch.ids[:1]
    return ids, weight


def weighted_cross_entropy(weights: torch.Tensor) -> LossFn:
    """F.cross_entropy(weight=)'s weighted mean, except that a batch whose samples all
    weigh 0 has loss 0 (no gradient) instead of 0/0."""

    def weighted(logits: torch.Tensor, yb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        w = weights[yb]
        loss = F.cross_entropy(logits, yb, reduction="none")
        return (loss * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    return weighted


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    hooks: Hooks | None = None,
    wrap_batches: Callable[[Iterator[Batch]], Iterator[Batch]] | None = None,
    progress: Progress | None = None,
    what: str = "train",
) -> FitResult:
    """Up to `epochs` seeded passes over the samples `ids` of (x, y), through `fit`.

    `wrap_batches` may add samples to each batch or end the passes early (the
    stopping rules). Progress is started and stopped here, once per call.
    """
    hooks = hooks or Hooks()
    progress = progress or NullProgress()
    batches = epoch_batches(ids, batch_size, epochs, seed)
    if wrap_batches is not None:
        batches = wrap_batches(batches)
    progress.start(epochs * steps_per_epoch(len(ids), batch_size), what, epochs)
    try:
        return fit(model, optimizer, x, y, batches, hooks, progress.advance)
    finally:
        progress.stop()


# A prediction batch keeps its largest layer output within this many bytes: a larger one
# falls out of the CPU's caches. 1,024 28x28 images through ResNet-9 (196 KiB per image
# at its largest layer) predicted slower than batches that fit (`bench_predict.py`); the
# logits are the same whatever the batch, each sample being predicted on its own.
