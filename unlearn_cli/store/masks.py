"""Pruning masks of a sparse version: `versions/NNNN/masks.safetensors`.

One bit per weight (`np.packbits`, 1 = kept), one uint8 tensor per pruned weight
tensor; the metadata holds each tensor's shape and the pruning schedule. A
LeNet's masks take 1/32 of its fp32 weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.fileio import load_weights, save_weights

MASKS_NAME = "masks.safetensors"
MASKS_FORMAT = "unlearn-masks"


def write_masks(path: Path, masks: dict[str, torch.Tensor], schedule: dict) -> None:
    packed = {
        name: torch.from_numpy(np.packbits(m.cpu().numpy().astype(bool).ravel()))
        for name, m in masks.items()
    }
    shapes = {name: list(m.shape) for name, m in masks.items()}
    meta = {"format": MASKS_FORMAT, "shapes": json.dumps(shapes), "schedule": json.dumps(schedule)}
    save_weights(path, packed, meta)


def read_masks(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(bool masks by parameter name, the pruning schedule)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    packed = load_weights(path)
    shapes = json.loads(meta["shapes"])
    masks = {}
    for name, shape in shapes.items():
        bits = np.unpackbits(packed[name].numpy())[: int(np.prod(shape))]
        masks[name] = torch.from_numpy(bits.astype(bool)).reshape(shape)
    return masks, json.loads(meta["schedule"])
