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
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from unlearn_cli.errors import StoreError
from unlearn_cli.representations import Basis
from unlearn_cli.store.zarr_store import _zstd

COVARIANCE_FORMAT = "unlearn-covariance"
COVARIANCE_FORMAT_VERSION = 1
COVARIANCE_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class CovarianceState:
    bases: dict[str, Basis]  # by layer (module) name, in model order
    samples: int  # training samples summed into C
    excluded_ids: np.ndarray  # forgotten training ids not in C, sorted
    computed_on: int  # the version the run-level statistics were measured on
    model_fingerprint: str
    dtype: str = "float32"  # how the singular vectors are stored

    @property
    def nbytes(self) -> int:
        item = 4 if self.dtype == "float32" else 8
        return sum(b.vectors.numel() * item + b.values.numel() * 8 for b in self.bases.values())


def write_covariance(path: Path, state: CovarianceState, replace: bool = False) -> None:
    """Write `state` at `path` through a temporary sibling and a rename."""
    path = Path(path)
    if path.exists() and not replace:
        raise StoreError(f"{path} already exists.", hint="pass --force to replace it")
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        group = zarr.open_group(str(tmp), mode="w")
        layers = []
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
                    compressors=[_zstd()],
                )
                arr[...] = data
        ids = np.asarray(state.excluded_ids, dtype=np.uint32)
        arr = group.create_array(
            "excluded_ids", shape=ids.shape, dtype="uint32", chunks=(max(1, len(ids)),)
        )
        if len(ids):
            arr[...] = ids
        group.attrs.update(
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
        if path.exists():
            old = path.parent / f".old-{uuid.uuid4().hex}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open(path: Path) -> tuple[zarr.Group, dict]:
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:  # noqa: BLE001  (any unreadable store gets one message)
        raise StoreError(
            f"Cannot read the covariance store {path}: {exc}.",
            hint="compute it again with `unlearn covariance RUN --force`",
        ) from None
    if attrs.get("format") != COVARIANCE_FORMAT:
        raise StoreError(f"{path} is not an unlearn covariance store.")
    if attrs.get("format_version") != COVARIANCE_FORMAT_VERSION:
        raise StoreError(
            f"Covariance store {path} has format version {attrs.get('format_version')}; this "
            f"unlearn reads version {COVARIANCE_FORMAT_VERSION}.",
            hint="compute it again with `unlearn covariance RUN --force`",
        )
    return group, attrs


def read_attrs(path: Path) -> dict:
    """The store's attributes only (cheap): samples, computed_on, layers, ..."""
    return _open(path)[1]


def read_covariance(path: Path) -> CovarianceState:
    group, attrs = _open(path)
    bases = {}
    for i, layer in enumerate(attrs["layers"]):
        vec = torch.from_numpy(np.asarray(group[f"layers/{i:02d}/vectors"][...]))
        val = torch.from_numpy(np.asarray(group[f"layers/{i:02d}/values"][...]))
        bases[layer["name"]] = Basis(vec.double(), val.double())
    return CovarianceState(
        bases=bases,
        samples=int(attrs["samples"]),
        excluded_ids=np.asarray(group["excluded_ids"][...], dtype=np.int64),
        computed_on=int(attrs["computed_on"]),
        model_fingerprint=attrs["model_fingerprint"],
        dtype=attrs.get("dtype", "float32"),
    )


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
