"""A run made and finished: one way for `unlearn train` and a custom loop's `record()`.

`start_run` checks the target, writes θ0, run.json (`status: training`) and the sample
index as the run's commit protocol makes a run appear (`commits.py`: one rename, or one
conditional create), and opens the update store with a recorder of the model's steps.
`complete_run` writes version 0 (the trained model) and marks run.json complete
(`run_meta` is run.json as training starts). A run whose training stopped between the
two stays `status: training`, which every command refuses clearly.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unlearn_cli.commits import commits_for
from unlearn_cli.data import absolute_spec
from unlearn_cli.errors import RunError
from unlearn_cli.fileio import save_weights
from unlearn_cli.location import location
from unlearn_cli.models import ModelSpec, architecture_fingerprint
from unlearn_cli.rundir import RUN_FORMAT, RUN_FORMAT_VERSION, Run, now
from unlearn_cli.store import KeepSchedule, StoreLayout, ZarrUpdateStore
from unlearn_cli.store.chunks import rows_per_shard
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.version import __version__

if TYPE_CHECKING:
    from unlearn_cli.train_config import RecordConfig, TrainConfig


def check_target(path: Path, force: bool) -> None:
    """Refuse an --out that holds anything but a run we may replace (checked before work)."""
    path = location(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} exists and is a file.", hint="choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise RunError(
                f"--out {path} already exists and is not empty.",
                hint="choose a new --out, or pass --force to replace the run there",
            )
        if not (path / "run.json").exists():
            raise RunError(
                f"--out {path} is not empty and is not an unlearn run; refusing to delete it.",
                hint="choose a new --out",
            )


def start_run(
    out: Path,
    force: bool,
    meta: dict[str, Any],
    init_state: dict[str, torch.Tensor],
    *,
    index: Callable[[Path], None] | None = None,
    record: tuple[nn.Module, StoreLayout, KeepSchedule, int] | None = None,
) -> tuple[Run, Recorder | None]:
    """The new run at `out` (an old one replaced only with `force`), with `index` writing
    its sample index, and, given (model, layout, schedule, samples) to `record`, its empty
    update store and a recorder of the model's steps."""
    path = location(out)
    check_target(path, force)

    def write_files(folder: Path) -> None:
        save_weights(folder / "init.safetensors", init_state, {"format": RUN_FORMAT})
        if index is not None:
            index(folder)

    commits_for(path).create_run(meta, write_files)
    run = Run(path, meta)
    recorder = None if record is None else make_recorder(run, *record, meta)
    return run, recorder


def complete_run(run: Run, model: nn.Module, summary: dict[str, Any], **meta: Any) -> None:
    """Version 0, the trained model, and run.json marked complete (with `summary` as its
    `train`, and `meta`'s keys beside it)."""
    receipt = {"kind": "train", "init_hash": run.meta["model"]["init_hash"], **summary}
    run.write_version(model, receipt)
    run.write_meta({**run.meta, **meta, "status": "complete", "train": summary})


def make_recorder(
    run: Run,
    model: nn.Module,
    layout: StoreLayout,
    schedule: KeepSchedule,
    n_samples: int,
    meta: dict[str, Any],
) -> Recorder:
    """The run's update store, created empty, and a recorder of `model`'s steps into it."""
    store = ZarrUpdateStore.create(
        run.store_path,
        layout,
        n_samples=n_samples,
        planned_steps=int(meta["steps"]),
        model_fingerprint=meta["model"]["fingerprint"],
        schedule=schedule.to_dict(),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    return Recorder(store, params, rows_per_shard(layout.row_width))


def run_meta(
    config: TrainConfig,
    record: RecordConfig,
    schedule: KeepSchedule | None,
    dataset: dict[str, Any],
    model: nn.Module,
    spec: ModelSpec,
    init_hash: str,
    steps: int,
) -> dict[str, Any]:
    """run.json of a run that starts training (`status: training`); also the Python API's."""
    arch = architecture_fingerprint(model)
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "status": "training",
        "created": now(),
        "config": {
            **asdict(config),
            "dataset": config.dataset and absolute_spec(config.dataset),
        },
        "record": {**asdict(record), "schedule": schedule.to_dict() if schedule else None},
        "dataset": dataset,
        "model": {
            "name": config.model,
            "spec": spec.to_dict(),
            "architecture": arch,
            "init_hash": init_hash,
            "fingerprint": model_fingerprint(arch, init_hash),
            "num_params": sum(p.numel() for p in model.parameters()),
        },
        "steps": steps,
        "environment": environment(),
    }


def model_fingerprint(arch: str, init_hash: str) -> str:
    return hashlib.blake2b(f"{arch}:{init_hash}".encode(), digest_size=16).hexdigest()


def environment() -> dict[str, Any]:
    import zarr

    return {
        "unlearn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "platform": platform.platform(),
    }
