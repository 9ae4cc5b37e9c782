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

import copy
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.distributed import SINGLE, World
from unlearn_cli.errors import InvalidParameterError, UnlearnError
from unlearn_cli.params import Interval, IsInstance, Options
from unlearn_cli.progress import NullProgress, Progress

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


class TrainingDiverged(UnlearnError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run, given the data. Same config => same weights."""

    dataset: str = "digits"
    model: str = "lenet"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.01  # with momentum 0.9: 98.4% on MNIST/LeNet after one epoch
    optimizer: str = "sgd"  # "sgd" or "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    init: str | None = None  # safetensors file whose weights are theta_0 (else a seeded init)
    image_size: int | None = None  # images read from files are resized to this (square)
    # "balanced" (n / (classes * count), from the training labels) or one weight per class,
    # comma-separated: the cross-entropy of train, retrain and every method that trains on
    # samples with their own labels (`class_weights`)
    class_weight: str | None = None

    constraints: ClassVar[dict] = {
        "dataset": IsInstance(str, "a dataset name"),
        "model": IsInstance(str, "a model name"),
        "epochs": Interval(int, 1, None),
        "batch_size": Interval(int, 1, None),
        "lr": Interval(float, 0, None, closed="neither"),
        "optimizer": Options(("sgd", "adam")),
        "momentum": Interval(float, 0, 1, closed="left"),
        "weight_decay": Interval(float, 0, None),
        "seed": Interval(int, 0, 2**63 - 1),
        "device": IsInstance(str, "a torch device such as 'cpu' or 'cuda'"),
        "init": [IsInstance(str, "a .safetensors file"), None],
        "image_size": [Interval(int, 1, 1024), None],
        "class_weight": [IsInstance(str, "'balanced' or one weight per class, e.g. 20,0.5"), None],
    }


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


def parse_class_weight(spec: str) -> str | list[float]:
    """`--class-weight` checked without the data: "balanced", or the non-negative finite
    numbers it lists (at least one positive). Their count is checked by `class_weights`."""
    if spec.strip().lower() == "balanced":
        return "balanced"
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise InvalidParameterError(
            "--class-weight must be 'balanced' or non-negative numbers, one per class, "
            f"comma-separated. Got {spec!r} instead.",
            hint="e.g. --class-weight balanced, or --class-weight 1,4 for two classes",
        )
    if not any(values):
        raise InvalidParameterError(
            f"--class-weight gives every class weight 0: {spec!r}.",
            hint="give at least one class a positive weight",
        )
    return values


def class_weights(config: TrainConfig, y: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """The run's per-class loss weights (float32, one per class), or None for plain
    cross-entropy. "balanced" weighs class c by n / (classes * count_c) over the whole
    training split, so retrain and every method weigh as training did, whatever a
    request removes; a class with no training sample gets 0 (nothing to weigh)."""
    if config.class_weight is None:
        return None
    parsed = parse_class_weight(config.class_weight)
    if parsed == "balanced":
        counts = torch.bincount(y.cpu(), minlength=num_classes).double()
        safe = counts.clamp(min=1)
        return torch.where(counts > 0, len(y) / (num_classes * safe), 0.0).float()
    if len(parsed) != num_classes:
        raise InvalidParameterError(
            f"--class-weight must be 'balanced' or {num_classes} non-negative numbers, one "
            f"per class, comma-separated. Got {config.class_weight!r} instead.",
            hint=f"e.g. --class-weight balanced, or --class-weight {','.join(['1'] * num_classes)}",
        )
    return torch.tensor(parsed, dtype=torch.float32)


def make_optimizer(
    name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def optimizer_for(
    config: TrainConfig, model: nn.Module, lr: float | None = None, momentum: float | None = None
) -> torch.optim.Optimizer:
    """The run's optimizer type and weight decay; `lr`/`momentum` override the run's."""
    return make_optimizer(
        config.optimizer,
        model.parameters(),
        config.lr if lr is None else lr,
        config.momentum if momentum is None else momentum,
        config.weight_decay,
    )


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, `mps` or `auto`, checked against what this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidParameterError(
            f"The 'device' parameter must be a torch device. Got {name!r} instead.",
            hint="use cpu, cuda, cuda:N, mps or auto",
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but CUDA is not available here.",
            hint="use --device cpu (or auto)",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but MPS is not available.", hint="use --device cpu"
        )
    return device


@dataclass
class ParamMask:
    """Which entries of each trainable tensor may change; the rest keep `frozen`'s values
    (their gradients are zeroed and their values restored after each step, so momentum
    and weight decay cannot move them either)."""

    masks: dict[str, torch.Tensor]  # bool, shaped like the parameter
    frozen: dict[str, torch.Tensor]  # the values held where the mask is False

    def grad_hook(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if p.grad is not None and name in self.masks:
                p.grad.mul_(self.masks[name])

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks:
                p.copy_(torch.where(self.masks[name], p, self.frozen[name]))

    def hooks(self, model: nn.Module) -> Hooks:
        return Hooks(grad_hook=self.grad_hook, on_step=lambda _: self.restore(model))

    def updated_fractions(self) -> dict[str, float]:
        return {name: round(float(m.float().mean()), 6) for name, m in self.masks.items()}


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
    *,
    loss_fn: LossFn = cross_entropy,
    grad_hook: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    progress: Callable[[int, dict], None] | None = None,
    freeze_batchnorm: bool = False,
    world: World = SINGLE,
    class_weights: torch.Tensor | None = None,
) -> FitResult:
    """Run optimizer steps over `batches`; x/y are indexed by the batches' sample ids.

    `x` (N, C, H, W) and `y` (N,) are moved to the model's device once.
    `freeze_batchnorm` keeps BatchNorm layers in eval mode: they normalise with
    their running statistics and do not update them. `class_weights` weigh the default
    cross-entropy (a weighted mean over the batch; with several ranks, each rank's share of
    the global batch is its share of the weights).
    """
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    weights = None
    if class_weights is not None and loss_fn is cross_entropy:
        weights = class_weights.to(device)

        def weighted(logits: torch.Tensor, yb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            # F.cross_entropy(weight=)'s weighted mean, except that a batch whose samples all
            # weigh 0 has loss 0 (no gradient) instead of 0/0
            w = weights[yb]
            loss = F.cross_entropy(logits, yb, reduction="none")
            return (loss * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

        loss_fn = weighted
    result = FitResult()
    correct = seen = 0
    epoch = -1
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    with channels_last_on_cpu(model, x[:1]):  # the loop's layout; given back as it was
        for batch in batches:
            if batch.epoch != epoch:  # running accuracy restarts each epoch
                epoch, correct, seen = batch.epoch, 0, 0
            ids, weight = batch.ids, 1.0
            if world.size > 1:  # this rank's part of the global batch, weighted by its share
                ids = world.local_part(batch.ids)
                if weights is None:
                    weight = world.loss_weight(len(ids), len(batch.ids))
                else:  # a weighted mean: each rank's share is its share of the class weights
                    local, total = (float(weights[y[i.to(device)]].sum()) for i in (ids, batch.ids))
                    weight = world.loss_weight(local, total) if total else 0.0
                if len(ids) == 0:  # a last batch smaller than the world: join with no weight
                    ids = batch.ids[:1]
            idx = ids.to(device)
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb, idx)
            (loss * weight if weight != 1.0 else loss).backward()
            if grad_hook is not None:
                grad_hook(model)
            optimizer.step()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"Training diverged at step {batch.step}: the loss is {loss_value}.",
                    hint="lower the learning rate (--lr)",
                )
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(yb)
            result.steps += 1
            result.last_loss = loss_value
            result.losses.append(loss_value)
            if on_step is not None:
                on_step(StepInfo(batch, loss_value))
            if progress is not None:
                progress(1, {"loss": loss_value, "acc": correct / seen, "epoch": batch.epoch})
    result.train_accuracy = correct / seen if seen else float("nan")
    return result


def convolutional(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def trains_channels_last(model: nn.Module, sample: torch.Tensor) -> bool:
    """Whether the loop trains `model` in channels-last layout: a convolutional model on the
    CPU whose forward takes it. Code of one's own that needs contiguous activations (e.g.
    `x.view(len(x), -1)` after a convolution) fails one forward of `sample` in eval mode
    without gradients (no statistic moves), and such a model trains as it is."""
    net = getattr(model, "module", model)  # DDP's own forward would talk to the other ranks
    if next(net.parameters()).device.type != "cpu" or not convolutional(net):
        return False
    modes = [(m, m.training) for m in net.modules()]  # e.g. BatchNorm frozen by the loop
    net.to(memory_format=torch.channels_last)
    try:
        net.eval()
        with torch.no_grad():
            net(sample)
        return True
    except RuntimeError:
        return False
    finally:
        net.to(memory_format=torch.contiguous_format)
        for m, training in modes:
            m.training = training


@contextmanager
def channels_last_on_cpu(model: nn.Module, sample: torch.Tensor) -> Iterator[None]:
    """Train a convolutional model on the CPU in channels-last layout (when its forward
    takes it, `trains_channels_last`), and give it back contiguous (what every other part
    of the tool expects of a model's weights).

    oneDNN's convolutions and pooling, forward and backward, run faster in that layout on
    the CPU: 1.14-1.20x per training step for the bundled models (`bench_layout.py`, medians
    of 9 rounds). The parameters stay the same objects (the optimizer and the recorder keep
    theirs); only their strides change, and the record reads each tensor in its logical
    order, so it is laid out as before. The convolutions round differently from the
    contiguous layout's, as a GPU's would. Ranks of a distributed run train in it too:
    `distributed.wrap` converts the model before DDP lays out its gradient buckets."""
    if not trains_channels_last(model, sample):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


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
        return fit(
            model,
            optimizer,
            x,
            y,
            batches,
            loss_fn=hooks.loss_fn,
            grad_hook=hooks.grad_hook,
            on_step=hooks.on_step,
            progress=progress.advance,
            freeze_batchnorm=hooks.freeze_batchnorm,
            world=hooks.world,
            class_weights=hooks.class_weights,
        )
    finally:
        progress.stop()


# A prediction batch keeps its largest layer output within this many bytes: a larger one
# falls out of the CPU's caches. 1,024 28x28 images through ResNet-9 (196 KiB per image
# at its largest layer) predicted slower than batches that fit (`bench_predict.py`); the
# logits are the same whatever the batch, each sample being predicted on its own.
ACTIVATION_BUDGET = 16 * 2**20
MAX_PREDICT_BATCH = 1024
MIN_PREDICT_BATCH = 8


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """Logits (N, K) in eval mode, on the CPU, without building an autograd graph.

    On the CPU the model predicts through `predictor_copy`: channels-last
    convolutions and in-place ReLUs, with the same logits to float rounding. Without a
    `batch_size`, a convolutional model's batches keep their largest layer output within
    `ACTIVATION_BUDGET` (`prediction_batch`); any other predicts 1,024 at a time."""
    device = next(model.parameters()).device
    predictor = predictor_copy(model) if device.type == "cpu" else None
    was_training = model.training
    net = predictor if predictor is not None else model
    net.eval()
    with torch.inference_mode():
        if batch_size is None:
            batch_size = prediction_batch(net, x[:1].to(device))
        out = [net(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out).clone()  # a normal tensor: inference tensors refuse autograd use


def prediction_batch(net: nn.Module, sample: torch.Tensor, budget: int = ACTIVATION_BUDGET) -> int:
    """Samples per prediction batch for `net` (in eval mode): as many as keep its largest
    layer output within `budget` bytes (`largest_output` of one `sample`), between
    `MIN_PREDICT_BATCH` and `MAX_PREDICT_BATCH`; the most for a model without convolutions
    (its activations are small) or when nothing could be measured."""
    if len(sample) == 0 or not convolutional(net):
        return MAX_PREDICT_BATCH
    largest = largest_output(net, sample[:1])
    if largest == 0:
        return MAX_PREDICT_BATCH
    return max(MIN_PREDICT_BATCH, min(MAX_PREDICT_BATCH, budget // largest))


def largest_output(net: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of the largest tensor a leaf module of `net` returns on `sample` (0: none)."""
    largest = 0

    def measure(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(measure) for m in leaves]
    try:
        net(sample)
    finally:
        for handle in handles:
            handle.remove()
    return largest


# Layers whose forward returns a new tensor: a ReLU right after one in an nn.Sequential
# may overwrite it, nothing else holds it.
_FRESH_OUTPUT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def predictor_copy(model: nn.Module) -> nn.Module | None:
    """A copy of `model` that predicts faster on the CPU, or None when there is nothing to
    gain or the model cannot be copied (e.g. one holding open handles: it predicts as is).

    - 4-D (convolution) weights go channels-last: oneDNN's convolutions and pooling run
      1.4-2.8x faster in that layout (`bench_eval.py`); logits agree to ~1e-7;
    - a ReLU that directly follows a convolution, linear or batch-norm layer inside an
      nn.Sequential runs in place (no hooks on either): it saves allocating and writing
      the largest activations (`bench_eval.py`), with bit-identical results.
    """
    conv = convolutional(model)
    if not conv and not _in_place_relus(model):
        return None
    try:
        copied = copy.deepcopy(model)
    except Exception:  # an uncopyable user model: predicting as is is only slower
        return None
    for relu in _in_place_relus(copied):
        relu.inplace = True
    return copied.to(memory_format=torch.channels_last) if conv else copied


def _in_place_relus(model: nn.Module) -> list[nn.ReLU]:
    """The ReLUs that may run in place: each held once in the whole model, by a plain
    nn.Sequential, right after a layer that returns a new tensor, with no hooks."""
    held = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    found = []
    for seq in model.modules():
        if type(seq) is not nn.Sequential:
            continue
        children = [m for m in seq._modules.values() if m is not None]
        for prev, relu in pairwise(children):
            if (
                type(relu) is nn.ReLU
                and not relu.inplace
                and held[id(relu)] == 1
                and type(prev) in _FRESH_OUTPUT
                and not (relu._forward_hooks or relu._forward_pre_hooks or prev._forward_hooks)
            ):
                found.append(relu)
    return found


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(x) == 0:
        return float("nan")
    return float((predict_logits(model, x).argmax(1) == y).float().mean())
