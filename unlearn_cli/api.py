"""The Python API: the CLI's commands as functions, for scripts and notebooks.

    import unlearn_cli as ul

    ul.train("runs/mnist", dataset="mnist", model="lenet", epochs=2, shadows=8)
    receipt = ul.forget("runs/mnist", "auto", ids=[3, 17, 256])   # = forget --json
    report = ul.evaluate("runs/mnist", max_residual=0.0)           # = eval --json
    model = ul.load_model("runs/mnist")                             # the newest live version

Each function takes what its command takes, returns the document its `--json` prints (the
same published schema) and raises the same errors (`unlearn_cli.errors`: each with a
`message` and a `hint`; the CLI prints them as one line and exits 1). A training loop of
one's own records a run with `record` (`recording.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.data import load_dataset as _load_dataset
from unlearn_cli.evidence import ALPHA
from unlearn_cli.location import location
from unlearn_cli.models import ModelSpec as ModelSpec
from unlearn_cli.models import create_model as create_model
from unlearn_cli.ops.evaluate import evaluate as evaluate_run
from unlearn_cli.ops.export import export_version
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.log import run_log
from unlearn_cli.ops.retire import retire_run
from unlearn_cli.ops.shadows import build_shadows
from unlearn_cli.ops.storage_report import storage_report as storage_report_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.ops.verify import verify_run
from unlearn_cli.recording import RunRecorder as RunRecorder
from unlearn_cli.recording import record as record
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig, with_dataset_defaults

T, R = TrainConfig, RecordConfig


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _request(ids: Any, classes: Any, keys: Any, subjects: Any) -> ForgetRequest:
    return ForgetRequest(
        ids=tuple(int(i) for i in ids),
        classes=tuple(str(c) for c in classes),
        keys=tuple(keys),
        subjects=tuple(subjects),
    )


def train(
    out: str | Path,
    *,
    dataset: str = T.dataset,
    model: str = T.model,
    epochs: int | None = None,
    batch_size: int = T.batch_size,
    lr: float | None = None,
    optimizer: str = T.optimizer,
    momentum: float = T.momentum,
    weight_decay: float = T.weight_decay,
    class_weight: str | None = None,
    seed: int = T.seed,
    device: str = T.device,
    init: str | Path | None = None,
    image_size: int | None = None,
    keep: float = R.keep,
    keep_schedule: str = R.schedule,
    keep_min: float | None = R.keep_min,
    delta_dtype: str = R.delta_dtype,
    keep_tolerance: float = R.keep_tolerance,
    record_updates: bool = True,
    covariance: bool = False,
    shadows: int | None = None,
    subjects: str | Path | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    force: bool = False,
) -> dict:
    """`unlearn train --json`: train into `out`, recording pruned updates; `epochs` and
    `lr` default to the dataset's recommendation, as on the command line."""
    config = with_dataset_defaults(
        dataset,
        epochs,
        lr,
        model=model,
        batch_size=batch_size,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        init=str(Path(init).expanduser().resolve()) if init else None,
        image_size=image_size,
        class_weight=class_weight,
    )
    record_config = RecordConfig(
        enabled=record_updates,
        keep=keep,
        schedule=keep_schedule,
        keep_min=keep_min,
        delta_dtype=delta_dtype,
        keep_tolerance=keep_tolerance,
    )
    return train_run(
        config,
        record_config,
        location(out),
        data_root=_path(data_root),
        download=download,
        force=force,
        covariance=covariance,
        subjects_file=_path(subjects),
        shadows=shadows,
    )


def forget(
    run: str | Path,
    method: str = "auto",
    *,
    ids: Any = (),
    classes: Any = (),
    keys: Any = (),
    subjects: Any = (),
    params: dict[str, Any] | None = None,
    from_version: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    force: bool = False,
    max_affected_share: float | None = None,
    data_root: str | Path | None = None,
    alpha: float = ALPHA,
    max_residual: float | None = None,
) -> dict:
    """`unlearn forget --json`: apply a deletion request (with the per-example evidence
    where the run has shadows; `passed` is false when `max_residual` is given and the
    result stays flagged beyond chance, where the CLI exits 3)."""
    config = ForgetConfig(
        method=method,
        params=params or None,
        from_version=from_version,
        seed=seed,
        device=device,
        max_affected_share=max_affected_share,
        guard=not force,
        alpha=alpha,
        max_residual=max_residual,
    )
    return forget_run(
        location(run),
        config,
        _request(ids, classes, keys, subjects),
        data_root=_path(data_root),
    )


def evaluate(
    run: str | Path,
    version: int | None = None,
    *,
    reference: str | None = None,
    ids: Any = (),
    classes: Any = (),
    keys: Any = (),
    subjects: Any = (),
    gates: dict[str, float] | None = None,
    max_residual: float | None = None,
    shadows: int | None = None,
    alpha: float = ALPHA,
    cache: str | Path | None = None,
    data_root: str | Path | None = None,
) -> dict:
    """`unlearn eval --json`: score a version on its forget set (the ledger's, or the one
    named). `gates` maps gate names to limits as the options do (`{"max_forget_acc":
    0.05}`); `passed` says whether they held (where the CLI exits 3). With the run's shadow
    models, or `shadows` K (trained where missing), it carries the per-example evidence."""
    request = _request(ids, classes, keys, subjects)
    doc, _ = evaluate_run(
        location(run),
        version,
        reference,
        request if request.given else None,
        {**(gates or {}), "max_residual": max_residual},
        data_root=_path(data_root),
        cache=_path(cache),
        shadows=shadows,
        alpha=alpha,
    )
    return doc


def train_shadows(run: str | Path, k: int = 8, *, data_root: str | Path | None = None) -> dict:
    """`unlearn shadows RUN -k K --json`: the run's shadow models, trained where missing."""
    return build_shadows(location(run), k, data_root=_path(data_root))


def storage_report(run: str | Path, project_epochs: int = 100) -> dict:
    """`unlearn storage-report --json`: what the run's records cost."""
    return storage_report_run(location(run), project_epochs)


def verify(run: str | Path) -> dict:
    """`unlearn verify --json`: every file of the run checked; `ok` is false where the
    CLI exits 1 (the report lists every problem)."""
    return verify_run(location(run))


def log(run: str | Path) -> dict:
    """`unlearn log --json`: every version, what made it, and what stays owed."""
    return run_log(location(run))


def export(
    run: str | Path,
    out: str | Path,
    version: int | None = None,
    *,
    fmt: str = "safetensors",
    force: bool = False,
) -> dict:
    """`unlearn export --json`: a version's weights to `out`, with a provenance sidecar."""
    return export_version(location(run), version, Path(out), fmt, force)


def retire(run: str | Path, version: int, why: str) -> dict:
    """`unlearn retire --json`: set a version and its descendants aside."""
    return retire_run(location(run), version, why)


def load_model(run: str | Path, version: int | None = None) -> nn.Module:
    """A version's model (default: the newest live one), weights checked against its receipt."""
    opened = Run.open(location(run))
    return opened.load_model(opened.resolve_version(version)).eval()


def load_dataset(
    spec: str, data_root: str | Path | None = None, image_size: int | None = None
) -> Dataset:
    """A dataset as `--dataset` names it (standardised tensors, class names, keys)."""
    return _load_dataset(spec, _path(data_root), False, image_size)
