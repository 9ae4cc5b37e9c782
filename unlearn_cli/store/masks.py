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

from unlearn_cli.errors import RunError
from unlearn_cli.fileio import check_format, load_weights, save_weights, weights_metadata

MASKS_NAME = "masks.safetensors"
MASKS_FORMAT = "unlearn-masks"
MASKS_FORMAT_VERSION = 1


def write_masks(path: Path, masks: dict[str, torch.Tensor], schedule: dict) -> None:
    packed = {
        name: torch.from_numpy(np.packbits(m.cpu().numpy().astype(bool).ravel()))
        for name, m in masks.items()
    }
    shapes = {name: list(m.shape) for name, m in masks.items()}
    meta = {
        "format": MASKS_FORMAT,
        "format_version": str(MASKS_FORMAT_VERSION),
        "shapes": json.dumps(shapes),
        "schedule": json.dumps(schedule),
    }
    save_weights(path, packed, meta)


def read_masks(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(bool masks by parameter name, the pruning schedule)."""
    packed = load_weights(path)  # a damaged file is a RunError naming it
    meta = weights_metadata(path)
    version = int(meta.get("format_version", "1"))  # files before 0.2 carry no version
    hint = "forget again from the version this one was pruned from"
    check_format({**meta, "format_version": version}, MASKS_FORMAT, (1,), path, RunError, hint)
    try:
        shapes = json.loads(meta["shapes"])
        masks = {}
        for name, shape in shapes.items():
            bits = np.unpackbits(packed[name].numpy())[: int(np.prod(shape))]
            masks[name] = torch.from_numpy(bits.astype(bool)).reshape(shape)
        return masks, json.loads(meta["schedule"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RunError(f"The masks in {path} are damaged ({exc}).", hint=hint) from None
