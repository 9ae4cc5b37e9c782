"""Datasets behind one registry. Adding one is a file plus an import line here."""

from unlearn_cli.data import (  # noqa: F401  (registers)
    digits,
    imagefolder,
    manifest,
    medmnist,
    mnist,
    npz,
)
from unlearn_cli.data.base import (
    DATA_ROOT_ENV,
    DATASETS,
    Dataset,
    absolute_spec,
    default_data_root,
    from_arrays,
    load_dataset,
    recommended_settings,
)

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "Dataset",
    "absolute_spec",
    "default_data_root",
    "from_arrays",
    "load_dataset",
    "recommended_settings",
]
