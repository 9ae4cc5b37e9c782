"""`unlearn covariance`: measure a run's layer-input covariances for `pgu`.

They are measured once on a version's model over the training samples that
version still holds (a full pass over them: each batch's products at the stored
precision, `--dtype`, float32 by default, summed in float64) and written
to `RUN/covariance.zarr`. Afterwards `pgu` needs no retained data: it subtracts
what it forgets and stores the result with its version.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.basis import Basis
from unlearn_cli.data import Dataset
from unlearn_cli.errors import StoreError
from unlearn_cli.input_covariance import input_covariance
from unlearn_cli.ledger import ledger_state, retained_ids
from unlearn_cli.params import Interval, Options, validate_params
from unlearn_cli.progress import Progress
from unlearn_cli.rundir import Run
from unlearn_cli.store.covariance import (
    COVARIANCE_DTYPES,
    COVARIANCE_NAME,
    CovarianceState,
    disk_bytes,
    live_path,
    write_covariance,
)


def measure(
    model: torch.nn.Module,
    data: Dataset,
    forgotten: np.ndarray,
    version: int,
    fingerprint: str,
    dtype: str = "float32",
    batch_size: int = 256,
    progress: Progress | None = None,
) -> CovarianceState:
    """The statistics of `model` over every training sample not in `forgotten`."""
    ids = retained_ids(data.n_train, forgotten)
    sums = input_covariance(
        model, data.x_train[ids], batch_size, progress, precision=getattr(torch, dtype)
    )
    return CovarianceState(
        bases={name: Basis.from_covariance(c) for name, c in sums.items()},
        samples=len(ids),
        excluded_ids=np.asarray(forgotten, dtype=np.int64),
        computed_on=version,
        model_fingerprint=fingerprint,
        dtype=dtype,
    )


def compute_covariance(
    run_path: Path,
    version: int | None = None,
    *,
    data_root: Path | None = None,
    download: bool = False,
    force: bool = False,
    dtype: str = "float32",
    batch_size: int = 256,
    progress: Progress | None = None,
) -> dict:
    """Measure and store `RUN/covariance.zarr` for `version` (default: the latest)."""
    validate_params(
        "covariance",
        {"dtype": dtype, "batch_size": batch_size},
        {"dtype": Options(COVARIANCE_DTYPES), "batch_size": Interval(int, 1, None)},
    )
    run = Run.open(run_path)
    version = run.resolve_version(version)
    path = run.path / COVARIANCE_NAME
    if live_path(path).exists() and not force:
        raise StoreError(
            f"Run {run.path} already has layer covariances ({path.name}).",
            hint="pass --force to measure them again",
        )
    data = run.load_dataset(data_root, download)
    forgotten = ledger_state(run.version_dir(version)).forgotten_ids
    model = run.load_model(version)
    with run.lock():
        start = time.perf_counter()
        fingerprint = run.meta["model"]["fingerprint"]
        state = measure(model, data, forgotten, version, fingerprint, dtype, batch_size, progress)
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
