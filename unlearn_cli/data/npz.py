"""A user's own arrays: `npz:<path>` with x_train, y_train, x_test, y_test.

Images may be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, square.
uint8 images are scaled by 1/255, others used as they are (then standardised).
Labels are integers 0..K-1; an optional `class_names` array names them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from unlearn_cli.data.base import DATASETS, Dataset, from_arrays, require_native_size
from unlearn_cli.errors import DataError, DataNotFoundError, InvalidParameterError, UnlearnError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _to_nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise InvalidParameterError(
            f"'{key}' in {path} has shape {x.shape}; expected square images "
            "(N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3.",
        )
    return x


@DATASETS.register("npz", "your own arrays: npz:<path> with x_train, y_train, x_test, y_test")
def load_npz(arg: str | None, data_root: Path, download: bool, image_size: int | None) -> Dataset:
    require_native_size("npz", image_size)
    if not arg:
        raise InvalidParameterError(
            "Dataset 'npz' needs a file: use 'npz:<path>'.", hint="e.g. --dataset npz:data.npz"
        )
    path = Path(arg).expanduser().resolve()
    if not path.is_file():
        raise DataNotFoundError(
            f"npz file not found: {path}.",
            hint="save your arrays with numpy.savez(path, x_train=..., y_train=..., "
            "x_test=..., y_test=...)",
        )
    arrays, names = read_npz(path)
    x_train = _to_nchw(arrays["x_train"], "x_train", path)
    x_test = _to_nchw(arrays["x_test"], "x_test", path)
    k = len(names) if names is not None else class_count(arrays, path)
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return from_arrays(
        f"npz:{path}",
        x_train,
        arrays["y_train"],
        x_test,
        arrays["y_test"],
        tuple(names) if names is not None else tuple(str(i) for i in range(k)),
        scale=scale,
    )


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """The four arrays and the optional class names; any decoding failure is a DataError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz]
            if missing:
                raise InvalidParameterError(
                    f"{path} lacks the array(s) {', '.join(missing)}.",
                    hint=f"an npz dataset holds {', '.join(KEYS)}",
                )
            arrays = {k: npz[k] for k in KEYS}
            names = [str(n) for n in npz["class_names"]] if "class_names" in npz else None
    except UnlearnError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc or 'empty'}).",
            hint="write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., "
            "y_test=...); object arrays (pickles) are not read",
        ) from None
    return arrays, names


def class_count(arrays: dict[str, np.ndarray], path: Path) -> int:
    """K = the largest training label + 1, when every class 0..K-1 has a training sample."""
    y = arrays["y_train"].reshape(-1)
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        return 1  # `check_arrays` then names what is wrong with these labels
    k = int(y.max()) + 1
    missing = np.setdiff1d(np.arange(k), y)
    if missing.size:
        raise DataError(
            f"{path}: class {int(missing[0])} has no training sample, but labels run to {k - 1} "
            f"({missing.size} class(es) missing).",
            hint="relabel the classes 0..K-1 without gaps, or give class_names for all K",
        )
    return k
