"""The model registry. Every model is built from a `ModelSpec` taken from the dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from unlearn_cli.models import external
from unlearn_cli.models.spec import ModelSpec
from unlearn_cli.registry import Registry

__all__ = ["MODELS", "ModelSpec", "architecture_fingerprint", "create_model", "flat_features"]


MODELS: Registry[Callable[[ModelSpec], nn.Module]] = Registry("model")


def model_builder(name: str) -> Callable[[ModelSpec], nn.Module]:
    """A registered name, `torchvision:<name>` or `<module>:<callable>` (models/external.py)."""
    if external.is_external(name):
        return external.external_builder(name)
    return MODELS.get(name)


def create_model(name: str, spec: ModelSpec) -> nn.Module:
    model = model_builder(name)(spec)
    if external.is_external(name):
        external.check_forward(model, spec, name)
    return model


_FLAT: dict[tuple[str, ModelSpec], int] = {}


def flat_features(features: nn.Module, spec: ModelSpec) -> int:
    """Size of the flattened output of a conv trunk, from one dry forward pass (remembered
    per trunk architecture, as printed, and spec: every later model skips the pass)."""
    key = (str(features), spec)
    if key not in _FLAT:
        with torch.no_grad():
            dummy = torch.zeros(1, spec.channels, spec.image_size, spec.image_size)
            _FLAT[key] = int(features(dummy).numel())
    return _FLAT[key]


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of parameter/buffer names, shapes and dtypes: equal iff the same architecture."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()
