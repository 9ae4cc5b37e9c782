"""MNIST from `<data root>/MNIST/raw` (torchvision's layout): the four IDX files are read
directly (importing torchvision costs ~2.8 s per command); torchvision only downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    if missing:
        fetch_mnist(data_root)
    x_train, y_train, x_test, y_test = (read_idx(raw / f) for f in RAW_FILES)
    return from_arrays(
        "mnist",
        x_train[:, None],
        y_train.astype(np.int64),  # as torchvision returns them: the fingerprint hashes it
        x_test[:, None],
        y_test.astype(np.int64),
        tuple(str(c) for c in range(10)),
        scale=255.0,
    )


def fetch_mnist(data_root: Path) -> None:
    """Download (and check) the IDX files through torchvision."""
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(data_root), train=train, download=True)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:  # download, integrity
        raise DataError(
            f"Could not download MNIST under {data_root}: {exc}",
            hint="check the network, or copy the four IDX files into MNIST/raw/",
        ) from exc


IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's format: zero, zero, type 0x08, rank, the
    dimensions as big-endian int32, then the data)."""
    data = path.read_bytes()
    fix = "replace it with the original file (or delete MNIST/raw and pass --download)"
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != IDX_UBYTE or data[3] == 0:
        raise DataError(f"{path} is not an IDX file of unsigned bytes.", hint=fix)
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header.", hint=fix)
    dims = np.frombuffer(data[4:header], ">i4").astype(np.int64)
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or padded: {len(data)} bytes, its header promises {expected}.",
            hint=fix,
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(tuple(dims))
