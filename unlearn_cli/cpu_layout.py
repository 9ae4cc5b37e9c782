"""The CPU's faster memory layout for convolutional models (channels-last), for the training
loop, prediction and the ranks of a distributed run alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


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
