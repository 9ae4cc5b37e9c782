from torch import nn

from unlearn_cli.models.base import MODELS, ModelSpec


@MODELS.register("mlp")
def mlp(spec: ModelSpec) -> nn.Module:
    """Two hidden layers (256, 128) with ReLU."""
    d = spec.channels * spec.image_size**2
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, spec.num_classes),
    )
