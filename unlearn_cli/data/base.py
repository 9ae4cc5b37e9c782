"""The `Dataset` every loader returns, and the dataset registry.

All splits live in memory as tensors: x (N, C, H, W) float32 standardised with
the training split's per-channel mean/std, y (N,) int64. A training sample's
*sample id* is its position in the training split; it never changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.errors import DataError, InvalidParameterError
from unlearn_cli.registry import Registry

DATA_ROOT_ENV = "UNLEARN_DATA_ROOT"
# Training settings a dataset recommends, used by `unlearn train` for the options the
# user leaves out (name -> {"epochs": ..., "lr": ...}); the run records what was used.
RECOMMENDED: dict[str, dict[str, float | int]] = {}


@dataclass(frozen=True)
class Dataset:
    name: str  # the full spec, e.g. "medmnist:pneumoniamnist"
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str  # hash of the raw arrays and labels (and keys), before standardisation
    # Stable names of the training samples (a relative path or a manifest id), for datasets
    # read from files; requests may name samples by key. None: samples are named by id.
    keys: tuple[str, ...] | None = None
    # The data subject (e.g. patient) of each training sample, where the dataset names one.
    subjects: tuple[str, ...] | None = None
    # Per-channel mean and std (of raw values scaled to 0..1) the images were standardised
    # with: what code serving an exported model must apply to its inputs.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "n_train": self.n_train,
            "n_test": int(self.x_test.shape[0]),
            "channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "keys": self.keys is not None,
            "normalize": {"mean": list(self.mean), "std": list(self.std)},
        }


# A loader takes (argument after the colon or None, data root, download flag, image size
# or None for the dataset's own).
Loader = Callable[[str | None, Path, bool, int | None], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


def default_data_root() -> Path:
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "unlearn" / "data"


def load_dataset(
    spec: str,
    data_root: Path | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> Dataset:
    """Load a dataset by spec: `digits`, `mnist`, `medmnist:<flag>`, `npz:<path>`,
    `imagefolder:<dir>` or `csv:<manifest>`; `image_size` resizes images read from files."""
    name, _, arg = spec.partition(":")
    loader = DATASETS.get(name)
    root = Path(data_root) if data_root else default_data_root()
    return loader(arg or None, root, download, image_size)


FILE_DATASETS = ("npz", "imagefolder", "csv")  # the argument is a path


def absolute_spec(spec: str) -> str:
    """`spec` with a file dataset's path made absolute (from the current folder), as a run
    records it: later commands, started from any folder, read the same files."""
    kind, _, arg = spec.partition(":")
    if kind in FILE_DATASETS and arg:
        return f"{kind}:{Path(arg).expanduser().resolve()}"
    return spec


def recommended_settings(spec: str) -> dict[str, float | int]:
    """The training settings the dataset named by `spec` recommends (may be empty)."""
    return dict(RECOMMENDED.get(spec.partition(":")[0], {}))


def require_no_argument(name: str, arg: str | None) -> None:
    if arg is not None:
        raise InvalidParameterError(
            f"Dataset '{name}' takes no argument. Got '{name}:{arg}' instead.",
            hint=f"use plain '{name}'",
        )


def require_native_size(name: str, image_size: int | None) -> None:
    if image_size is not None:
        raise InvalidParameterError(
            f"Dataset '{name}' has images of one fixed size; --image-size applies to "
            "imagefolder: and csv: datasets.",
            hint="leave --image-size out for this dataset",
        )


def check_arrays(name: str, split: str, x: np.ndarray, y: np.ndarray, classes: int) -> None:
    """Images (N, C, H, W) with finite values; labels (N,) integers in 0..classes-1."""
    fix = f"fix or remove it in the {split} split of '{name}'"
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(
            f"Dataset '{name}' has no {split} images (shape {x.shape}).",
            hint=f"the {split} split needs at least one image",
        )
    if x.shape[0] != np.asarray(y).reshape(-1).shape[0]:
        raise DataError(
            f"Dataset '{name}': the {split} split has {x.shape[0]} images but "
            f"{np.asarray(y).size} labels.",
            hint="give one label per image",
        )
    if not np.issubdtype(x.dtype, np.integer) and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
        raise DataError(
            f"Dataset '{name}': {split} image {bad} holds NaN or infinite pixel values.", hint=fix
        )
    labels = np.asarray(y).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"Dataset '{name}': {split} labels have dtype {labels.dtype}; labels must be "
            "integers 0..K-1.",
            hint="store class indices as integers (e.g. y.astype(int))",
        )
    out = (labels < 0) | (labels >= classes)
    if out.any():
        bad = int(np.flatnonzero(out)[0])
        raise DataError(
            f"Dataset '{name}': {split} sample {bad} has label {int(labels[bad])}, outside "
            f"0..{classes - 1}.",
            hint=fix,
        )


def _scaled_copy(x: np.ndarray, scale: float) -> np.ndarray:
    """A C-contiguous float32 copy of `x` divided by `scale` (in float32), never a view."""
    out = np.empty(np.shape(x), np.float32)
    out[...] = x
    return np.divide(out, np.float32(scale), out=out)


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    scale: float,
    keys: tuple[str, ...] | None = None,
    subjects: tuple[str, ...] | None = None,
) -> Dataset:
    """Build a `Dataset` from NCHW arrays; `scale` maps raw values to [0, 1].

    The arrays are checked first (`check_arrays`), so a bad file is named with its
    first bad sample rather than surfacing later as a diverged loss.
    """
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        check_arrays(name, split, x, y, len(class_names))
    digest = hashlib.blake2b(digest_size=16)
    for arr in (x_train, y_train, x_test, y_test):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(arr.tobytes())
    if keys is not None:  # renaming a file changes what a key names
        digest.update("\n".join(keys).encode())
    # In place on one float32 copy each (the same values as `(x / scale - mean) / std`;
    # a temporary per operation cost MNIST 0.5 s of page faults per command).
    xtr, xte = (torch.from_numpy(_scaled_copy(x, scale)) for x in (x_train, x_test))
    # Per-channel standardisation from the training split only.
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(
        name=name,
        x_train=xtr.sub_(mean).div_(std),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64).reshape(-1)),
        x_test=xte.sub_(mean).div_(std),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64).reshape(-1)),
        class_names=class_names,
        fingerprint=digest.hexdigest(),
        keys=keys,
        subjects=subjects,
        mean=tuple(round(float(v), 6) for v in mean.reshape(-1)),
        std=tuple(round(float(v), 6) for v in std.reshape(-1)),
    )
