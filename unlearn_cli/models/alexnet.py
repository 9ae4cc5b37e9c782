from torch import nn

from unlearn_cli.models.base import MODELS, ModelSpec, flat_features


@MODELS.register("alexnet")
def alexnet(spec: ModelSpec) -> nn.Module:
    """AlexNet for small images: five 3x3 convs (32-96-192-128-128), fc 256-256, dropout."""
    size = spec.image_size

    def pool() -> list[nn.Module]:
        nonlocal size
        if size < 4:
            return []
        size //= 2
        return [nn.MaxPool2d(2)]

    convs = [nn.Conv2d(spec.channels, 32, 3, padding=1), nn.ReLU(), *pool()]
    convs += [nn.Conv2d(32, 96, 3, padding=1), nn.ReLU(), *pool()]
    convs += [nn.Conv2d(96, 192, 3, padding=1), nn.ReLU()]
    convs += [nn.Conv2d(192, 128, 3, padding=1), nn.ReLU()]
    convs += [nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), *pool()]
    features = nn.Sequential(*convs, nn.Flatten())
    return nn.Sequential(
        features,
        nn.Dropout(0.5),
        nn.Linear(flat_features(features, spec), 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, spec.num_classes),
    )
