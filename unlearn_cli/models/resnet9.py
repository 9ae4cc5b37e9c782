"""ResNet-9 (the DAWNBench design) at base width 32, with BatchNorm.

BatchNorm running statistics are buffers, not trainable parameters: the update
store records parameters only, so subtracting updates leaves the running
statistics as trained. Unlearning methods say what they do with them.
"""

import torch
from torch import nn

from unlearn_cli.models.base import MODELS, ModelSpec


def conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@MODELS.register("resnet9")
def resnet9(spec: ModelSpec) -> nn.Module:
    """ResNet-9, base width 32 (32-64-128-256), BatchNorm, two residual blocks."""
    w = 32
    return nn.Sequential(
        conv_bn(spec.channels, w),
        conv_bn(w, 2 * w, pool=True),
        Residual(2 * w),
        conv_bn(2 * w, 4 * w, pool=True),
        conv_bn(4 * w, 8 * w, pool=spec.image_size >= 8),
        Residual(8 * w),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * w, spec.num_classes),
    )
