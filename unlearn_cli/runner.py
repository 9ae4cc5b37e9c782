"""`train_run`: train a model on a dataset into a run directory, recording updates."""

from __future__ import annotations

import contextlib
import hashlib
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

import unlearn_cli
from unlearn_cli.covariance import measure, run_covariance_path
from unlearn_cli.data import DATASETS, Dataset, load_dataset
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.fileio import save_weights, state_hash
from unlearn_cli.models import MODELS, ModelSpec, architecture_fingerprint, create_model
from unlearn_cli.params import Interval, Options, validate_dataclass
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.rundir import RUN_FORMAT, RUN_FORMAT_VERSION, Run
from unlearn_cli.store import ZarrUpdateStore, make_layout, parse_schedule
from unlearn_cli.store.covariance import write_covariance
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.store.zarr_store import rows_per_shard
from unlearn_cli.training import (
    TrainConfig,
    accuracy,
    epoch_batches,
    fit,
    make_optimizer,
    steps_per_epoch,
)


@dataclass(frozen=True)
class RecordConfig:
    """How `train` records updates. keep=1 with float32 is the dense amnesiac record."""

    enabled: bool = True
    # Chosen on MNIST/LeNet's rare-class request (benchmarks/results/forget.md): depth 0.2
    # forgets all targeted samples with the least retained-accuracy loss among those that do.
    keep: float = 0.2
    schedule: str = "depth"  # "uniform", "depth" or a JSON file path
    keep_min: float | None = None  # lower bound of the depth schedule
    delta_dtype: str = "float16"

    constraints: ClassVar[dict] = {
        "keep": Interval(float, 0, 1, closed="right"),
        "keep_min": [Interval(float, 0, 1, closed="right"), None],
        "delta_dtype": Options(("float16", "bfloat16", "float32")),
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidParameterError(
            f"The 'device' parameter of train must be a torch device. Got {name!r} instead.",
            hint="use cpu, cuda, cuda:N, mps or auto",
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but CUDA is not available here.",
            hint="use --device cpu (or auto)",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(
            f"Device {name!r} was requested but MPS is not available.", hint="use --device cpu"
        )
    return device


def validate_train(config: TrainConfig, record: RecordConfig) -> None:
    """Everything that can be checked before loading data."""
    validate_dataclass("train", config)
    validate_dataclass("train", record)
    MODELS.get(config.model)
    DATASETS.get(config.dataset.partition(":")[0])
    resolve_device(config.device)


def model_fingerprint(arch: str, init_hash: str) -> str:
    return hashlib.blake2b(f"{arch}:{init_hash}".encode(), digest_size=16).hexdigest()


def environment() -> dict:
    import zarr

    return {
        "unlearn": unlearn_cli.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "platform": platform.platform(),
    }


def train_run(
    config: TrainConfig,
    record: RecordConfig,
    out: Path,
    *,
    data_root: Path | None = None,
    download: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    covariance: bool = False,
) -> dict:
    """Train into `out` and return the run summary (also stored in run.json).

    `covariance` also stores the layer-input covariances `pgu` needs (one more
    pass over the training set, after the timed training).
    """
    validate_train(config, record)
    Run.check_target(out, force)
    data = load_dataset(config.dataset, data_root, download)
    schedule = (
        parse_schedule(record.schedule, record.keep, record.keep_min) if record.enabled else None
    )
    run = Run.create(out, force)
    progress = progress or NullProgress()

    torch.manual_seed(config.seed)
    spec = ModelSpec(data.channels, data.image_size, data.num_classes)
    model = create_model(config.model, spec).to(resolve_device(config.device))
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_weights(run.init_path, init_state, {"format": RUN_FORMAT})
    init_hash = state_hash(init_state)
    arch = architecture_fingerprint(model)
    fingerprint = model_fingerprint(arch, init_hash)
    n_steps = config.epochs * steps_per_epoch(data.n_train, config.batch_size)
    meta = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "status": "training",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": asdict(config),
        "record": {**asdict(record), "schedule": schedule.to_dict() if schedule else None},
        "dataset": data.describe(),
        "model": {
            "name": config.model,
            "spec": spec.to_dict(),
            "architecture": arch,
            "init_hash": init_hash,
            "fingerprint": fingerprint,
            "num_params": sum(p.numel() for p in model.parameters()),
        },
        "steps": n_steps,
        "environment": environment(),
    }
    run.write_meta(meta)

    recorder = None
    if record.enabled:
        params = [p for p in model.parameters() if p.requires_grad]
        layout = make_layout(model, schedule, record.delta_dtype)
        store = ZarrUpdateStore.create(
            run.store_path,
            layout,
            n_samples=data.n_train,
            planned_steps=n_steps,
            model_fingerprint=fingerprint,
            schedule=schedule.to_dict(),
        )
        recorder = Recorder(store, params, rows_per_shard(layout.row_width))

    result, seconds = _train(model, data, config, recorder, progress, n_steps)
    test_acc = accuracy(model, data.x_test, data.y_test)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    summary = {
        "steps": result.steps,
        "train_seconds": round(seconds, 3),
        "final_loss": result.last_loss,
        "train_accuracy": result.train_accuracy,
        "test_accuracy": test_acc,
    }
    run.write_version(
        state,
        {
            "kind": "train",
            "model_hash": state_hash(state),
            "init_hash": init_hash,
            **summary,
        },
    )
    run.write_meta({**meta, "status": "complete", "train": summary})
    if covariance:
        start = time.perf_counter()
        stats = measure(model, data, np.empty(0, np.int64), 0, fingerprint)
        write_covariance(run_covariance_path(run), stats)
        summary["covariance_seconds"] = round(time.perf_counter() - start, 3)
    return {"run": str(run.path), "dataset": data.name, "model": config.model, **summary}


def _train(model, data: Dataset, config: TrainConfig, recorder, progress: Progress, n_steps: int):
    """The timed part of `train`: the shared loop over shuffled batches of all samples."""
    optimizer = make_optimizer(
        config.optimizer, model.parameters(), config.lr, config.momentum, config.weight_decay
    )
    batches = epoch_batches(
        torch.arange(data.n_train), config.batch_size, config.epochs, config.seed
    )
    progress.start(n_steps, f"train {config.model} on {data.name}")
    start = time.perf_counter()
    try:
        result = fit(
            model,
            optimizer,
            data.x_train,
            data.y_train,
            batches,
            on_step=recorder.on_step if recorder else None,
            progress=progress.advance,
        )
        if recorder:
            recorder.close(complete=True)
    except BaseException:
        if recorder:  # keep what is committed; run.json still says "training"
            with contextlib.suppress(Exception):
                recorder.close(complete=False)
        raise
    finally:
        progress.stop()
    return result, time.perf_counter() - start
