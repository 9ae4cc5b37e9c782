"""`unlearn train`: train a model on a dataset into a run directory, recording updates.

Order of work: every parameter is checked, the data is loaded, and the keep
schedule, the model and the store layout are built, all before the run folder
is created; a bad schedule or model leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unlearn_cli.data import DATASETS, Dataset, load_dataset
from unlearn_cli.devices import resolve_device
from unlearn_cli.distributed import SINGLE, World, finish, init_world, wrap
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.fileio import load_into, load_weights, state_hash
from unlearn_cli.location import location
from unlearn_cli.models import ModelSpec, create_model, model_builder
from unlearn_cli.new_run import check_target, complete_run, run_meta, start_run
from unlearn_cli.ops.covariance import measure
from unlearn_cli.ops.shadows import shadows_summary
from unlearn_cli.params import validate_dataclass
from unlearn_cli.predict import accuracy
from unlearn_cli.progress import Progress
from unlearn_cli.rundir import Run, cpu_state
from unlearn_cli.samples import index_writer, read_subjects
from unlearn_cli.shadows import check_count
from unlearn_cli.store import KeepSchedule, StoreLayout, make_layout
from unlearn_cli.store.covariance import COVARIANCE_NAME, write_covariance
from unlearn_cli.store.layout import parse_schedule
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.train_config import (
    RecordConfig,
    TrainConfig,
    class_weights,
    optimizer_for,
    parse_class_weight,
)
from unlearn_cli.training import FitResult, Hooks, steps_per_epoch, train_epochs


@dataclass(frozen=True)
class Plan:
    """A training run checked and built in memory; nothing on disk yet."""

    data: Dataset
    model: nn.Module
    spec: ModelSpec
    schedule: KeepSchedule | None
    layout: StoreLayout | None
    steps: int
    class_weights: torch.Tensor | None = None  # of the loss (config.class_weight)


def check_training(config: TrainConfig, record: RecordConfig) -> KeepSchedule | None:
    """Every check that needs no data: parameters, model and dataset names, device, and
    the keep schedule (returned)."""
    validate_dataclass("train", config)
    validate_dataclass("train", record)
    if config.class_weight is not None:
        parse_class_weight(config.class_weight)
    model_builder(config.model)
    DATASETS.get(config.dataset.partition(":")[0])
    resolve_device(config.device)
    if not record.enabled:
        return None
    return parse_schedule(record.schedule, record.keep, record.keep_min)


def plan_training(
    config: TrainConfig, record: RecordConfig, data_root: Path | None, download: bool
) -> Plan:
    """Check every parameter, load the data, and build the schedule, model and layout."""
    schedule = check_training(config, record)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, data_root, download, config.image_size)
    weights = class_weights(config, data.y_train, data.num_classes)
    torch.manual_seed(config.seed)
    spec = ModelSpec(data.channels, data.image_size, data.num_classes)
    model = create_model(config.model, spec)
    if config.init:
        load_init(model, Path(config.init))
    model = model.to(device)
    layout = (
        make_layout(model, schedule, record.delta_dtype, record.keep_tolerance)
        if schedule
        else None
    )
    steps = config.epochs * steps_per_epoch(data.n_train, config.batch_size)
    return Plan(data, model, spec, schedule, layout, steps, weights)


def load_init(model: nn.Module, path: Path) -> list[str]:
    """Start from the weights in `path` (safetensors): theta_0 becomes them.

    Every tensor in the file must match a model tensor by name and shape; tensors the file
    lacks (typically a new classification head) keep their seeded initialisation. Returns
    those names.
    """
    if not path.is_file():
        raise InvalidParameterError(
            f"--init file not found: {path}.",
            hint="give a .safetensors file of weights (safetensors.torch.save_file(state, path))",
        )
    return load_into(model, load_weights(path), path, partial=True)


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
    subjects_file: Path | None = None,
    shadows: int | None = None,
) -> dict:
    """Train into `out` and return the run summary (also stored in run.json).

    `covariance` also stores the layer-input covariances `pgu` needs (one more
    pass over the training set, after the timed training); `shadows` K trains the
    shadow models of the per-example evidence (`ops/shadows.py`) after it.
    """
    if shadows is not None:
        check_count(shadows)
    world = init_world(resolve_device(config.device))
    try:
        if not world.is_main:  # trains its part of each batch; never touches the run
            plan = plan_training(config, record, data_root, download)
            result, seconds = _train(plan, config, None, None, world)
            return {"rank": world.rank, "steps": result.steps, "train_seconds": seconds}
        summary = _train_main(
            config,
            record,
            out,
            data_root,
            download,
            force,
            progress,
            covariance,
            subjects_file,
            world,
        )
    finally:
        finish(world)
    if shadows is not None:  # after the process group is gone: one process trains them
        run = Run.open(location(summary["run"]))
        summary["shadows"] = shadows_summary(
            run, run.load_dataset(data_root, download), shadows, progress, "train"
        )
    return summary


def _train_main(
    config: TrainConfig,
    record: RecordConfig,
    out: Path,
    data_root: Path | None,
    download: bool,
    force: bool,
    progress: Progress | None,
    covariance: bool,
    subjects_file: Path | None,
    world: World,
) -> dict:
    """Rank 0 (or the only process): the run directory, the record, the trained version."""
    check_target(out, force)
    plan = plan_training(config, record, data_root, download)
    subjects = plan.data.subjects
    if subjects_file is not None:
        subjects = read_subjects(subjects_file, plan.data)
    init_state = cpu_state(plan.model)
    meta = run_meta(
        config,
        record,
        plan.schedule,
        {**plan.data.describe(), "subjects": subjects is not None},
        plan.model,
        plan.spec,
        state_hash(init_state),
        plan.steps,
    )
    meta["world_size"] = world.size
    if plan.class_weights is not None:  # what "balanced" came to, for the record
        meta["class_weights"] = [round(float(w), 6) for w in plan.class_weights]
    record_into = None
    if plan.layout is not None and plan.schedule is not None:
        record_into = (plan.model, plan.layout, plan.schedule, plan.data.n_train)
    run, recorder = start_run(
        out,
        force,
        meta,
        init_state,
        index=index_writer(plan.data.keys, subjects),
        record=record_into,
    )
    result, seconds = _train(plan, config, recorder, progress, world)
    summary = {
        "steps": result.steps,
        "train_seconds": round(seconds, 3),
        "final_loss": result.last_loss,
        "train_accuracy": result.train_accuracy,
        "test_accuracy": accuracy(plan.model, plan.data.x_test, plan.data.y_test),
    }
    complete_run(run, plan.model, summary)
    if covariance:
        start = time.perf_counter()
        stats = measure(
            plan.model, plan.data, np.empty(0, np.int64), 0, meta["model"]["fingerprint"]
        )
        write_covariance(run.path / COVARIANCE_NAME, stats)
        summary["covariance_seconds"] = round(time.perf_counter() - start, 3)
    weights = {"class_weights": meta["class_weights"]} if "class_weights" in meta else {}
    return {
        "run": str(run.path),
        "dataset": plan.data.name,
        "model": config.model,
        **summary,
        **weights,
    }


def _train(
    plan: Plan,
    config: TrainConfig,
    recorder: Recorder | None,
    progress: Progress | None,
    world: World = SINGLE,
) -> tuple[FitResult, float]:
    """The timed part of `train`: the shared loop over shuffled batches of all samples
    (with several ranks, each trains its part of every batch through DDP)."""
    data = plan.data
    start = time.perf_counter()
    try:
        result = train_epochs(
            wrap(plan.model, world, data.x_train[:1]),
            optimizer_for(config, plan.model),
            data.x_train,
            data.y_train,
            torch.arange(data.n_train),
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            hooks=Hooks(
                on_step=recorder.on_step if recorder else None,
                world=world,
                class_weights=plan.class_weights,
            ),
            progress=progress,
            what=f"train {config.model} on {data.name}",
        )
        if recorder:
            recorder.close(complete=True)
    except BaseException:
        if recorder:  # keep what is committed; run.json still says "training"
            with contextlib.suppress(Exception):
                recorder.close(complete=False)
        raise
    return result, time.perf_counter() - start
