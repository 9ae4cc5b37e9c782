"""The model registry. Every model is built from a `ModelSpec` taken from the dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from unlearn_cli.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    channels: int
    image_size: int
    num_classes: int

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(int(d["channels"]), int(d["image_size"]), int(d["num_classes"]))

    def to_dict(self) -> dict:
        return asdict(self)


MODELS: Registry[Callable[[ModelSpec], nn.Module]] = Registry("model")


def create_model(name: str, spec: ModelSpec) -> nn.Module:
    return MODELS.get(name)(spec)


def flat_features(features: nn.Module, spec: ModelSpec) -> int:
    """Size of the flattened output of a conv trunk, from one dry forward pass."""
    with torch.no_grad():
        dummy = torch.zeros(1, spec.channels, spec.image_size, spec.image_size)
        return int(features(dummy).numel())


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of parameter/buffer names, shapes and dtypes: equal iff the same architecture."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()
