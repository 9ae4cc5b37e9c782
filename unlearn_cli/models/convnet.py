from torch import nn

from unlearn_cli.models.base import MODELS, ModelSpec, flat_features


@MODELS.register("convnet")
def convnet(spec: ModelSpec) -> nn.Module:
    """Three 3x3 conv blocks (32, 64, 64) with max-pool, then fc 128."""
    layers: list[nn.Module] = []
    size, cin = spec.image_size, spec.channels
    for cout in (32, 64, 64):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        if size >= 4:  # pool while the map is big enough to halve
            layers.append(nn.MaxPool2d(2))
            size //= 2
        cin = cout
    features = nn.Sequential(*layers, nn.Flatten())
    return nn.Sequential(
        features,
        nn.Linear(flat_features(features, spec), 128),
        nn.ReLU(),
        nn.Linear(128, spec.num_classes),
    )
