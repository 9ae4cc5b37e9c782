"""What determines a training run (`TrainConfig`: same config, same weights), what
follows from it for everything that trains like the run (the per-class loss weights and
the optimizer), and how it is recorded (`RecordConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unlearn_cli.data import recommended_settings
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.params import Interval, IsInstance, Options


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


def with_dataset_defaults(
    dataset: str, epochs: int | None, lr: float | None, **rest
) -> TrainConfig:
    """A config from what was given, the dataset's recommended epochs and learning rate
    filling what was not (`train` and the Python API's `train` alike)."""
    recommended = recommended_settings(dataset)
    return TrainConfig(
        dataset=dataset,
        epochs=epochs if epochs is not None else int(recommended.get("epochs", TrainConfig.epochs)),
        lr=lr if lr is not None else float(recommended.get("lr", TrainConfig.lr)),
        **rest,
    )


@dataclass(frozen=True)
class RecordConfig:
    """How `train` records updates. keep=1 with float32 is the dense amnesiac record."""

    enabled: bool = True
    # Chosen on MNIST/LeNet's rare-class request (benchmarks/results/forget.md): depth 0.2
    # forgets all targeted samples with the least retained-accuracy loss among those that do.
    keep: float = 0.2
    schedule: str = "depth"  # "uniform", "depth" or a JSON file path
    keep_min: float | None = None  # lower bound of the depth schedule
    delta_dtype: str = "float16"
    # A large tensor keeps its m largest entries, m within k * (1 -+ this): 0.75x the
    # selection's time of an exact top-k at every step (0), same store size (issue 47).
    keep_tolerance: float = 0.25

    constraints: ClassVar[dict] = {
        "keep": Interval(float, 0, 1, closed="right"),
        "keep_tolerance": Interval(float, 0, 0.5, closed="both"),
        "keep_min": [Interval(float, 0, 1, closed="right"), None],
        "delta_dtype": Options(("float16", "bfloat16", "float32")),
    }
