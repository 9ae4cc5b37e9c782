from torch import nn

from unlearn_cli.models.base import MODELS, ModelSpec, flat_features


@MODELS.register("lenet")
def lenet(spec: ModelSpec) -> nn.Module:
    """LeNet-5: conv 6@5x5, conv 16@5x5, fc 120, 84 (ReLU, max-pool)."""
    # 28x28: 28 -> pool 14 -> conv 10 -> pool 5. Small images pad the second conv.
    pad2 = 0 if spec.image_size >= 16 else 2
    features = nn.Sequential(
        nn.Conv2d(spec.channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=pad2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        features,
        nn.Linear(flat_features(features, spec), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, spec.num_classes),
    )
