"""Torch devices by name, checked against what this machine has."""

from __future__ import annotations

import torch

from unlearn_cli.errors import InvalidParameterError


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, `mps` or `auto`, checked against what this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidParameterError(
            f"The 'device' parameter must be a torch device. Got {name!r} instead.",
            hint="use cpu, cuda, cuda:N, mps or auto",
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but CUDA is not available here.",
            hint="use --device cpu (or auto)",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but MPS is not available.", hint="use --device cpu"
        )
    return device
