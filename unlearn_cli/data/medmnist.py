"""Any 2D MedMNIST flag (28x28) through the medmnist package: `medmnist:<flag>`.

Files are read from `<data root>/medmnist/<flag>.npz`. The medmnist `val` split
is not used: training uses `train`, evaluation uses `test`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from unlearn_cli.data.base import DATASETS, Dataset, from_arrays, require_native_size
from unlearn_cli.errors import DataError, DataNotFoundError, InvalidParameterError


def _flags() -> list[str]:
    import medmnist

    return [
        flag
        for flag, info in medmnist.INFO.items()
        if not flag.endswith("3d") and info["task"] != "multi-label, binary-class"
    ]


@DATASETS.register("medmnist", "MedMNIST 2D, 28x28: medmnist:<flag>, e.g. medmnist:pneumoniamnist")
def load_medmnist(
    flag: str | None, data_root: Path, download: bool, image_size: int | None
) -> Dataset:
    require_native_size("medmnist", image_size)
    import medmnist

    flags = _flags()
    if flag not in flags:
        import difflib

        close = difflib.get_close_matches(flag or "", flags, n=1)
        suggestion = f" Did you mean 'medmnist:{close[0]}'?" if close else ""
        raise InvalidParameterError(
            f"Unknown MedMNIST flag '{flag}'.{suggestion}",
            hint="2D single-label flags: " + ", ".join(flags),
        )
    info = medmnist.INFO[flag]
    root = data_root / "medmnist"
    path = root / f"{flag}.npz"
    if not path.exists():
        if not download:
            raise DataNotFoundError(
                f"MedMNIST file not found: expected {path}.",
                hint="pass --download to fetch it (needs internet), or point --data-root "
                f"(or $UNLEARN_DATA_ROOT) at a folder holding medmnist/{flag}.npz",
            )
        root.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, info["python_class"])
    try:
        train = cls(split="train", root=str(root), download=download, size=28)
        test = cls(split="test", root=str(root), download=download, size=28)
    except (RuntimeError, OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"Could not read MedMNIST '{flag}' from {path}: {exc}",
            hint=f"re-download it with --download, or replace {path} with the official file",
        ) from exc

    def nchw(imgs: np.ndarray) -> np.ndarray:
        return imgs[:, None] if imgs.ndim == 3 else imgs.transpose(0, 3, 1, 2)

    names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    return from_arrays(
        f"medmnist:{flag}",
        nchw(train.imgs),
        train.labels.reshape(-1),
        nchw(test.imgs),
        test.labels.reshape(-1),
        names,
        scale=255.0,
    )
