"""The stored layer-input covariances (SVD form) that `pgu` projects against.

    covariance.zarr/               group attrs: format, version, model fingerprint,
                                   layers [{name, dim}], samples, computed_on, dtype
      layers/00/vectors  (d, d)    singular vectors (columns), float32 | float64, zstd
      layers/00/values   (d,)      singular values, descending, float64
      excluded_ids       (m,)      uint32  forgotten training ids not in the sums

The run keeps one at `RUN/covariance.zarr` (computed by `unlearn covariance` or
`unlearn train --covariance` on one version); each `pgu` version stores its
updated one in its own folder, so sequential requests compose and `--from`
starts from the right statistics. Written to a temporary folder and renamed.
Every chunk carries a CRC-32C (format 2), checked on every read.

Which of them a version uses (its own, else its nearest ancestor's, else the run's if
they were measured on one of its ancestors) is `lineage.find_covariance`, on the one walk
of a version's parents.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from unlearn_cli.basis import Basis
from unlearn_cli.errors import StoreError
from unlearn_cli.fileio import check_format, rename
from unlearn_cli.location import file_sizes, is_remote, remove_tree, zarr_store
from unlearn_cli.store.chunks import array, checked_zstd

COVARIANCE_NAME = "covariance.zarr"
COVARIANCE_FORMAT = "unlearn-covariance"
COVARIANCE_FORMAT_VERSION = 2  # 2: every chunk carries a CRC-32C
COVARIANCE_DTYPES = ("float32", "float64")
COMPUTE_HINT = "compute it with `unlearn covariance RUN` (or train with --covariance)"


@dataclass(frozen=True)
class CovarianceState:
    bases: dict[str, Basis]  # by layer (module) name, in model order
    samples: int  # training samples summed into C
    excluded_ids: np.ndarray  # forgotten training ids not in C, sorted
    computed_on: int  # the version the run-level statistics were measured on
    model_fingerprint: str
    dtype: str = "float32"  # how the singular vectors are stored


def live_path(path: Path) -> Path:
    """`path`, or the copy a killed replacement moved aside (`.old-*-NAME`) if `path` is
    missing: the statistics are never lost between the two renames of a replacement."""
    if is_remote(path) or path.exists():
        return path
    moved = sorted(path.parent.glob(f".old-*-{path.name}"), key=lambda p: p.stat().st_mtime)
    return moved[-1] if moved else path


def recover(path: Path) -> None:
    """Under the run's lock: put a store a killed replacement moved aside back in place,
    and remove the leftovers of finished ones (object storage has no renames to undo)."""
    if is_remote(path):
        return
    moved = live_path(path)
    if moved != path and moved.exists():
        rename(moved, path)
    for stale in [
        *path.parent.glob(f".old-*-{path.name}"),
        *path.parent.glob(f".tmp-*-{path.name}"),
    ]:
        shutil.rmtree(stale, ignore_errors=True)


def write_covariance(path: Path, state: CovarianceState, replace: bool = False) -> None:
    """Write `state` at `path` through a temporary sibling and a rename. On object storage,
    which cannot rename, a replacement deletes the old statistics first and writes the
    attributes last, so a kill leaves no store that reads as whole; they are derived data,
    and `unlearn covariance RUN --force` computes them again."""
    if path.exists() and not replace:
        raise StoreError(f"{path} already exists.", hint="pass --force to replace it")
    remote = is_remote(path)
    if remote:
        remove_tree(path)
    tmp = path if remote else path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        group = zarr.open_group(store=zarr_store(tmp), mode="w")
        layers: list[dict[str, Any]] = []
        for i, (name, basis) in enumerate(state.bases.items()):
            layers.append({"name": name, "dim": int(basis.values.numel())})
            vec = basis.vectors.to(getattr(torch, state.dtype)).numpy()
            val = basis.values.double().numpy()
            for key, data in (("vectors", vec), ("values", val)):
                arr = group.create_array(
                    f"layers/{i:02d}/{key}",
                    shape=data.shape,
                    dtype=data.dtype,
                    chunks=data.shape,
                    compressors=checked_zstd(),
                )
                arr[...] = data
        ids = np.asarray(state.excluded_ids, dtype=np.uint32)
        arr = group.create_array(
            "excluded_ids",
            shape=ids.shape,
            dtype="uint32",
            chunks=(max(1, len(ids)),),
            compressors=checked_zstd(),
        )
        if len(ids):
            arr[...] = ids
        group.update_attributes(
            {
                "format": COVARIANCE_FORMAT,
                "format_version": COVARIANCE_FORMAT_VERSION,
                "model_fingerprint": state.model_fingerprint,
                "layers": layers,
                "samples": int(state.samples),
                "computed_on": int(state.computed_on),
                "dtype": state.dtype,
            }
        )
        if remote:
            return
        old = path.parent / f".old-{uuid.uuid4().hex}-{path.name}"
        if path.exists():
            rename(path, old)  # a kill here leaves `old`: `live_path` reads it until
        rename(tmp, path)  # the next writer puts it back
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        remove_tree(tmp)
        raise


def _open(path: Path) -> tuple[zarr.Group, dict]:
    try:
        group = zarr.open_group(store=zarr_store(path, read_only=True), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:  # noqa: BLE001  (any unreadable store gets one message)
        raise StoreError(
            f"Cannot read the covariance store {path}: {exc}.",
            hint="compute it again with `unlearn covariance RUN --force`",
        ) from None
    check_format(
        attrs,
        COVARIANCE_FORMAT,
        (1, COVARIANCE_FORMAT_VERSION),
        f"Covariance store {path}",
        StoreError,
        hint="compute it again with `unlearn covariance RUN --force`",
    )
    return group, attrs


def read_attrs(path: Path) -> dict:
    """The store's attributes only (cheap): samples, computed_on, layers, ..."""
    return _open(path)[1]


def read_covariance(path: Path) -> CovarianceState:
    group, attrs = _open(path)
    bases = {}
    try:
        for i, layer in enumerate(attrs["layers"]):
            vec = torch.from_numpy(np.asarray(array(group, f"layers/{i:02d}/vectors")[...]))
            val = torch.from_numpy(np.asarray(array(group, f"layers/{i:02d}/values")[...]))
            bases[layer["name"]] = Basis(vec.double(), val.double())
        excluded = np.asarray(array(group, "excluded_ids")[...], dtype=np.int64)
    except Exception as exc:  # a checksum or codec error: damaged bytes
        raise StoreError(
            f"The covariance store {path} is corrupt: {exc}.",
            hint="compute it again with `unlearn covariance RUN --force`",
        ) from None
    return CovarianceState(
        bases=bases,
        samples=int(attrs["samples"]),
        excluded_ids=excluded,
        computed_on=int(attrs["computed_on"]),
        model_fingerprint=attrs["model_fingerprint"],
        dtype=attrs.get("dtype", "float32"),
    )


def disk_bytes(path: Path) -> int:
    return sum(file_sizes(path).values())
