"""Predicting in eval mode without autograd: batches sized by activation memory, a
channels-last copy on the CPU, and accuracy."""

from __future__ import annotations

import copy
from collections import Counter
from itertools import pairwise

import torch
from torch import nn

from unlearn_cli.cpu_layout import convolutional

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
