"""Recording a training loop of one's own (`unlearn_cli.record`): a run every command
accepts, from steps the caller takes.

    with ul.record("runs/xray", model, builder="torchvision:resnet18",
                   dataset="csv:/data/xray/manifest.csv", image_size=64,
                   lr=0.01, batch_size=32, epochs=3, momentum=0.9) as rec:
        for epoch in range(3):
            for x, y, keys in loader:                 # your loader, your loop
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
                rec.step(keys=keys, epoch=epoch)      # after every optimizer step

`record` needs to rebuild the model later, so `builder` names it as `--model` would
(`torchvision:<name>`, `<module>:<callable>` or a registered name); the given model must
have that architecture. With `dataset` (a `--dataset` spec), the data can be reloaded:
methods that re-run steps (replay, retrain, the training methods) and `eval` work, with
the loop's optimizer settings, which are then required (SGD's momentum too); steps may
name samples by key. Without it, give `n_samples` and name samples by id (positions
0..n-1); only the store methods (amnesiac, partial-amnesiac) then apply, `auto` picks
them, and run.json keeps no setting that was not given (it lists the methods that cannot
run: `unavailable`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearn_cli.custom_loop import (
    check_builder,
    check_loop_settings,
    custom_loop_meta,
    describe_data,
)
from unlearn_cli.data import Dataset, load_dataset
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.fileio import state_hash
from unlearn_cli.location import location
from unlearn_cli.models import ModelSpec
from unlearn_cli.new_run import check_target, complete_run, run_meta, start_run
from unlearn_cli.params import validate_dataclass
from unlearn_cli.rundir import Run, cpu_state
from unlearn_cli.samples import index_writer
from unlearn_cli.store import make_layout
from unlearn_cli.store.layout import parse_schedule
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.train_config import RecordConfig, TrainConfig, class_weights
from unlearn_cli.training import Batch, StepInfo


class RunRecorder:
    """Records a user's training loop into a run directory; use `record(...)`.

    Call `step(ids=...)` or `step(keys=...)` once after each `optimizer.step()`, with
    every sample that step's gradient saw (with gradient accumulation: all micro-batches;
    `add(...)` collects them and `step()` then records them). `close()` (or leaving the
    `with` block) writes version 0; an exception inside the block leaves the run
    incomplete, which every command refuses with a clear message.
    """

    def __init__(
        self,
        run: Run,
        model: nn.Module,
        recorder: Recorder | None,
        data: Dataset | None,
        n_samples: int,
    ) -> None:
        self.run, self.model, self._recorder, self._data = run, model, recorder, data
        self.n_samples = n_samples
        self._key_index = {k: i for i, k in enumerate(data.keys)} if data and data.keys else None
        self._pending: list[np.ndarray] = []
        self._epoch = 0
        self.steps = 0
        self._start = time.perf_counter()
        self._closed = False

    def add(self, ids: Any = None, keys: Any = None) -> None:
        """Collect a micro-batch's samples for the next `step()` (gradient accumulation)."""
        self._pending.append(self._ids(ids, keys))

    def step(self, ids: Any = None, keys: Any = None, epoch: int | None = None) -> None:
        """Record the update the optimizer just made, caused by these samples."""
        if self._closed:
            raise InvalidParameterError("This recorder is closed.", hint="open a new run")
        if ids is not None or keys is not None:
            self._pending.append(self._ids(ids, keys))
        if not self._pending:
            raise InvalidParameterError(
                "step() names no samples.", hint="pass ids=... or keys=... (or add() them first)"
            )
        batch_ids = np.unique(np.concatenate(self._pending))
        self._pending = []
        if epoch is not None:
            if epoch < self._epoch:
                raise InvalidParameterError(
                    f"step(epoch={epoch}) after epoch {self._epoch}: epochs only go forward."
                )
            self._epoch = int(epoch)
        if self._recorder is not None:
            info = StepInfo(Batch(self.steps, self._epoch, torch.from_numpy(batch_ids)), 0.0)
            self._recorder.on_step(info)
        self.steps += 1

    def _ids(self, ids: Any, keys: Any) -> np.ndarray:
        if (ids is None) == (keys is None):
            raise InvalidParameterError("Give either ids or keys for a step, not both or neither.")
        if keys is not None:
            if self._key_index is None:
                raise InvalidParameterError(
                    "Samples can be named by key only when record() was given a dataset "
                    "with keys (imagefolder: or csv:).",
                    hint="pass ids (positions 0..n_samples-1) instead",
                )
            missing = [k for k in keys if k not in self._key_index]
            if missing:
                raise InvalidParameterError(
                    f"Key {missing[0]!r} is not a training sample of the dataset.",
                    hint="keys are paths relative to the image folder, or the manifest's ids",
                )
            return np.array([self._key_index[k] for k in keys], np.int64)
        arr = torch.as_tensor(ids).reshape(-1).cpu().numpy()
        if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise InvalidParameterError("Sample ids must be a non-empty sequence of integers.")
        if arr.min() < 0 or arr.max() >= self.n_samples:
            raise InvalidParameterError(
                f"Sample id {int(arr.max() if arr.max() >= self.n_samples else arr.min())} is "
                f"outside 0..{self.n_samples - 1}.",
                hint="ids are positions in the training split",
            )
        return arr.astype(np.int64)

    def close(self) -> dict:
        """Finish the record and write version 0 (the trained model). Returns its summary."""
        if self._closed:
            raise InvalidParameterError("This recorder is already closed.")
        if self.steps == 0:
            raise InvalidParameterError(
                "No step was recorded.", hint="call rec.step(...) after each optimizer.step()"
            )
        self._closed = True
        if self._recorder is not None:
            self._recorder.close(complete=True)
        summary = {
            "steps": self.steps,
            "train_seconds": round(time.perf_counter() - self._start, 3),
            "loop": "custom",
        }
        complete_run(self.run, self.model, summary, steps=self.steps)
        return {"run": str(self.run.path), **summary}

    def abort(self) -> None:
        """Stop without finishing: committed steps stay, the run stays incomplete."""
        self._closed = True
        if self._recorder is not None:
            self._recorder.close(complete=False)

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def record(
    run_dir: str | Path,
    model: nn.Module,
    *,
    builder: str,
    dataset: str | None = None,
    image_size: int | None = None,
    data_root: str | Path | None = None,
    n_samples: int | None = None,
    spec: ModelSpec | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    optimizer: str = "sgd",
    momentum: float | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    class_weight: str | None = None,
    keep: float = RecordConfig.keep,
    schedule: str = RecordConfig.schedule,
    delta_dtype: str = RecordConfig.delta_dtype,
    keep_tolerance: float = RecordConfig.keep_tolerance,
    planned_steps: int = 0,
    force: bool = False,
) -> RunRecorder:
    """Open a run directory recording `model`'s training from its current weights (theta_0).

    `builder` rebuilds the architecture (checked against `model` now). With `dataset`,
    the optimizer settings (`lr`, `batch_size`, `epochs`, `optimizer`, `weight_decay`, and
    `momentum` for SGD) are required too: replay and retrain re-run steps with them. If
    your loss weighs classes, say how (`class_weight`, as `train --class-weight`) so they
    do too. Without `dataset`, settings not given are kept as unknown (null in run.json).
    """
    out = location(run_dir)
    check_target(out, force)
    settings = {"lr": lr, "batch_size": batch_size, "epochs": epochs, "momentum": momentum}
    data = None
    if dataset is not None:
        check_loop_settings(settings, optimizer)
        data = load_dataset(dataset, Path(data_root) if data_root else None, False, image_size)
        spec = ModelSpec(data.channels, data.image_size, data.num_classes)
        n_samples = data.n_train
    elif spec is None or n_samples is None:
        raise InvalidParameterError(
            "record() needs a dataset spec, or both spec (ModelSpec) and n_samples.",
            hint="e.g. record(run, model, builder='mynets:build', dataset='csv:scans.csv', ...)",
        )
    # validated with stand-ins where a setting is unknown; run.json keeps them unknown
    config = TrainConfig(
        dataset=dataset or "none",
        model=builder,
        epochs=epochs or 1,
        batch_size=batch_size or 1,
        lr=lr or 1.0,
        optimizer=optimizer,
        momentum=0.0 if momentum is None else momentum,
        weight_decay=weight_decay,
        seed=seed,
        image_size=image_size,
        class_weight=class_weight,
    )
    validate_dataclass("record", config)
    if data is not None:  # checked against the classes now, not when a forget needs them
        class_weights(config, data.y_train, data.num_classes)
    rec_config = RecordConfig(
        keep=keep, schedule=schedule, delta_dtype=delta_dtype, keep_tolerance=keep_tolerance
    )
    validate_dataclass("record", rec_config)
    check_builder(builder, model, spec)
    init_state = cpu_state(model)
    keep_schedule = parse_schedule(schedule, keep, None)
    described = describe_data(data, n_samples, spec)
    init_hash = state_hash(init_state)
    meta = run_meta(
        config, rec_config, keep_schedule, described, model, spec, init_hash, planned_steps
    )
    meta = custom_loop_meta(meta, settings, dataset)
    run, recorder = start_run(
        out,
        force,
        meta,
        init_state,
        index=index_writer(data.keys, data.subjects) if data is not None else None,
        record=(
            model,
            make_layout(model, keep_schedule, delta_dtype, keep_tolerance),
            keep_schedule,
            n_samples,
        ),
    )
    assert recorder is not None  # a custom loop's run always records
    return RunRecorder(run, model, recorder, data, int(n_samples))
