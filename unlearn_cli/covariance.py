"""Compute a run's layer-input covariances, and find the ones a version should use.

`compute_covariance` measures them once on a version's model over the training
samples that version still holds (a full pass over them, accumulated in
float64) and writes `RUN/covariance.zarr`. Afterwards `pgu` needs no retained
data: it subtracts what it forgets and stores the result with its version.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.data import Dataset
from unlearn_cli.errors import InvalidParameterError, StoreError
from unlearn_cli.ledger import ledger_state
from unlearn_cli.params import Options, validate_params
from unlearn_cli.representations import Basis, input_covariance
from unlearn_cli.rundir import Run
from unlearn_cli.store.covariance import (
    COVARIANCE_DTYPES,
    CovarianceState,
    disk_bytes,
    read_attrs,
    read_covariance,
    write_covariance,
)

COVARIANCE_NAME = "covariance.zarr"
COMPUTE_HINT = "compute it with `unlearn covariance RUN` (or train with --covariance)"


def run_covariance_path(run: Run) -> Path:
    return run.path / COVARIANCE_NAME


def measure(
    model: torch.nn.Module,
    data: Dataset,
    forgotten: np.ndarray,
    version: int,
    fingerprint: str,
    dtype: str = "float32",
    batch_size: int = 256,
) -> CovarianceState:
    """The statistics of `model` over every training sample not in `forgotten`."""
    keep = np.ones(data.n_train, dtype=bool)
    keep[forgotten] = False
    ids = torch.from_numpy(np.flatnonzero(keep))
    sums = input_covariance(model, data.x_train[ids], batch_size)
    return CovarianceState(
        bases={name: Basis.from_covariance(c) for name, c in sums.items()},
        samples=len(ids),
        excluded_ids=np.asarray(forgotten, dtype=np.int64),
        computed_on=version,
        model_fingerprint=fingerprint,
        dtype=dtype,
    )


def compute_covariance(
    run: Run,
    version: int | None = None,
    *,
    data_root: Path | None = None,
    download: bool = False,
    force: bool = False,
    dtype: str = "float32",
    batch_size: int = 256,
    data: Dataset | None = None,
) -> dict:
    """Measure and store `RUN/covariance.zarr` for `version` (default: the latest)."""
    validate_params("covariance", {"dtype": dtype}, {"dtype": Options(COVARIANCE_DTYPES)})
    if batch_size < 1:
        raise InvalidParameterError(
            f"--batch-size must be at least 1. Got {batch_size} instead.",
            hint="e.g. --batch-size 256",
        )
    version = run.check_version(version) if version is not None else run.latest_version()
    path = run_covariance_path(run)
    if path.exists() and not force:
        raise StoreError(
            f"Run {run.path} already has layer covariances ({path.name}).",
            hint="pass --force to measure them again",
        )
    data = data if data is not None else run.load_dataset(data_root, download)
    forgotten = ledger_state(run.version_dir(version)).forgotten_ids
    with run.lock():
        start = time.perf_counter()
        state = measure(
            run.load_model(version),
            data,
            forgotten,
            version,
            run.meta["model"]["fingerprint"],
            dtype,
            batch_size,
        )
        seconds = time.perf_counter() - start
        write_covariance(path, state, replace=force)
    return {
        "run": str(run.path),
        "path": str(path),
        "version": version,
        "samples": state.samples,
        "excluded": int(len(forgotten)),
        "dtype": dtype,
        "bytes": disk_bytes(path),
        "seconds": round(seconds, 3),
        "layers": [
            {"name": name, "dim": int(b.values.numel()), "kept_at_0.95": b.kept(0.95)}
            for name, b in state.bases.items()
        ],
    }


def find_covariance(run: Run, version: int) -> tuple[Path, CovarianceState]:
    """The statistics `version` uses: its own (a pgu version), else the nearest
    ancestor's, else the run's if they were measured on one of its ancestors."""
    base = run_covariance_path(run)
    base_on = read_attrs(base)["computed_on"] if base.exists() else None
    lineage = []
    v: int | None = version
    while v is not None:
        lineage.append(v)
        own = run.version_dir(v) / COVARIANCE_NAME
        if own.exists():
            return own, _checked(run, read_covariance(own), own)
        if v == base_on:
            return base, _checked(run, read_covariance(base), base)
        v = ledger_state(run.version_dir(v)).parent
    if base_on is None:
        raise StoreError(f"Run {run.path} has no layer covariances, which pgu needs.", COMPUTE_HINT)
    raise StoreError(
        f"The run's layer covariances were measured on version {base_on}, which version "
        f"{version} does not descend from (its lineage: {', '.join(map(str, lineage))}).",
        hint=f"measure them for it: `unlearn covariance RUN --version {version} --force`",
    )


def _checked(run: Run, state: CovarianceState, path: Path) -> CovarianceState:
    if state.model_fingerprint != run.meta["model"]["fingerprint"]:
        raise StoreError(
            f"The covariance store {path} belongs to another model.",
            hint="measure it again with `unlearn covariance RUN --force`",
        )
    return state


def covariance_stores(run: Run) -> list[dict]:
    """Every covariance store in the run, for `storage-report`."""
    found = []
    base = run_covariance_path(run)
    if base.exists():
        found.append({"where": "run", "path": str(base), "bytes": disk_bytes(base)})
    for v in run.versions():
        own = run.version_dir(v) / COVARIANCE_NAME
        if own.exists():
            found.append({"where": f"version {v}", "path": str(own), "bytes": disk_bytes(own)})
    return found
