"""MNIST through torchvision, read from `<data root>/MNIST/raw` (torchvision's layout)."""

from __future__ import annotations

from pathlib import Path

from unlearn_cli.data.base import (
    DATASETS,
    Dataset,
    from_arrays,
    require_native_size,
    require_no_argument,
)
from unlearn_cli.errors import DataError, DataNotFoundError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@DATASETS.register("mnist", "MNIST 28x28 (60000 train / 10000 test) via torchvision")
def load_mnist(arg: str | None, data_root: Path, download: bool, image_size: int | None) -> Dataset:
    require_native_size("mnist", image_size)
    require_no_argument("mnist", arg)
    raw = data_root / "MNIST" / "raw"
    missing = [f for f in RAW_FILES if not (raw / f).exists()]
    if missing and not download:
        raise DataNotFoundError(
            f"MNIST files not found: expected {raw / missing[0]} "
            f"({len(missing)} of {len(RAW_FILES)} files missing).",
            hint="pass --download to fetch them (needs internet), or point --data-root "
            "(or $UNLEARN_DATA_ROOT) at a folder holding MNIST/raw/",
        )
    from torchvision.datasets import MNIST

    try:
        train = MNIST(str(data_root), train=True, download=download)
        test = MNIST(str(data_root), train=False, download=download)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:  # download, integrity, decoding
        raise DataError(
            f"Could not load MNIST under {data_root}: {exc}",
            hint="check the network for --download, or copy the four IDX files into MNIST/raw/",
        ) from exc
    return from_arrays(
        "mnist",
        train.data.numpy()[:, None],
        train.targets.numpy(),
        test.data.numpy()[:, None],
        test.targets.numpy(),
        tuple(str(c) for c in range(10)),
        scale=255.0,
    )
