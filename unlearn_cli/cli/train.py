"""`unlearn train`: train a model while recording its pruned per-step updates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import flags, kv_table, out, show
from unlearn_cli.cli.options import DataRootOpt, DeviceOpt, DownloadOpt, JsonOpt, SeedOpt
from unlearn_cli.cli.progress import progress
from unlearn_cli.distributed import launched, relaunch
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.location import location
from unlearn_cli.ops.train import RecordConfig, check_training, train_run
from unlearn_cli.shadows import check_count
from unlearn_cli.train_config import TrainConfig, with_dataset_defaults

T, R = TrainConfig, RecordConfig


# Long only in its option declarations (one per flag, as Typer wants them).
def train(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Run directory to create: a path or a URL (s3://...).", parser=location
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(
            help="digits, mnist, medmnist:<flag>, npz:<path>, imagefolder:<dir> or csv:<manifest>."
        ),
    ] = T.dataset,
    model: Annotated[
        str,
        typer.Option(
            help="mlp, lenet, convnet, alexnet, resnet9, torchvision:<name> (e.g. "
            "torchvision:resnet18) or <module>:<callable> for your own code."
        ),
    ] = T.model,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="imagefolder:/csv: datasets: resize images to NxN (default: their own size)."
        ),
    ] = None,
    subjects: Annotated[
        Path | None,
        typer.Option(
            help="CSV key,subject naming the data subject of each training sample, so "
            "`forget --subject` can name them (a manifest's subject column does the same)."
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from these weights (.safetensors); they become theta_0, what amnesiac "
            "subtraction returns to. Tensors the file lacks keep their fresh initialisation."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help=f"Passes over the training split (default {T.epochs}, or the dataset's)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per optimizer step.")] = T.batch_size,
    lr: Annotated[
        float | None, typer.Option(help=f"Learning rate (default {T.lr}, or the dataset's).")
    ] = None,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = T.optimizer,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = T.momentum,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = T.weight_decay,
    class_weight: Annotated[
        str | None,
        typer.Option(
            help="Weigh the loss per class: 'balanced' (n / (classes x count), for rare "
            "classes) or one weight per class, comma-separated. Retrain and every method "
            "that trains on samples with their own labels use the same weights."
        ),
    ] = None,
    seed: SeedOpt = T.seed,
    device: DeviceOpt = T.device,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    keep: Annotated[
        float,
        typer.Option(help="Fraction of each layer's update entries recorded per step (1 = dense)."),
    ] = R.keep,
    keep_schedule: Annotated[
        str, typer.Option(help="uniform, depth, or a JSON file mapping tensor name to fraction.")
    ] = R.schedule,
    keep_min: Annotated[
        float | None,
        typer.Option(help="depth schedule: fraction kept in the first layer (default keep/10)."),
    ] = R.keep_min,
    delta_dtype: Annotated[
        str, typer.Option(help="float16, bfloat16 or float32 for recorded values.")
    ] = R.delta_dtype,
    keep_tolerance: Annotated[
        float,
        typer.Option(
            help="A tensor of over 4,096 entries keeps its m largest, m within k x (1 ± this) "
            "(a carried threshold, faster); 0 keeps exactly the top k every step."
        ),
    ] = R.keep_tolerance,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Train without recording updates.")
    ] = False,
    covariance: Annotated[
        bool,
        typer.Option(
            "--covariance",
            help="Also store the layer-input covariances that `forget --method pgu` needs.",
        ),
    ] = False,
    shadows: Annotated[
        int | None,
        typer.Option(
            "--shadows",
            help="Also train K shadow models (even; 8 is a good start), so that every forget "
            "receipt and eval carries per-example evidence (`unlearn shadows` does it later).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run at --out.")
    ] = False,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            help="Train with this many processes on this machine (DistributedDataParallel "
            "through torchrun; --batch-size is the global batch)."
        ),
    ] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on a dataset into a run directory, recording pruned updates."""
    if nproc_per_node < 1:
        raise InvalidParameterError(
            f"--nproc-per-node must be at least 1. Got {nproc_per_node} instead."
        )
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
        init=str(init.expanduser().resolve()) if init else None,
        image_size=image_size,
        class_weight=class_weight,
    )
    record = RecordConfig(
        enabled=not no_record,
        keep=keep,
        schedule=keep_schedule,
        keep_min=keep_min,
        delta_dtype=delta_dtype,
        keep_tolerance=keep_tolerance,
    )
    if nproc_per_node > 1 and not launched():
        check_training(config, record)  # one clear error here rather than one per process
        if shadows is not None:
            check_count(shadows)
        relaunch(flags.argv, nproc_per_node)
        return
    summary = train_run(
        config,
        record,
        out_dir,
        data_root=data_root,
        download=download,
        force=force,
        progress=progress(),
        covariance=covariance,
        subjects_file=subjects,
        shadows=shadows,
    )
    if "rank" in summary:  # another rank of a torchrun job: rank 0 reports
        return
    show(summary, json_out, render_train)


def render_train(summary: dict) -> None:
    out.print(
        kv_table(
            f"trained {summary['model']} on {summary['dataset']}",
            [
                ("run", summary["run"]),
                ("steps", summary["steps"]),
                ("test accuracy", f"{summary['test_accuracy']:.2%}"),
                ("final loss", summary["final_loss"]),
                ("wall time", f"{summary['train_seconds']:.1f} s"),
                *(
                    [("class weights", ", ".join(f"{w:.3g}" for w in summary["class_weights"]))]
                    if "class_weights" in summary
                    else []
                ),
                *(
                    [
                        (
                            "shadow models",
                            f"{summary['shadows']['shadows']} in "
                            f"{summary['shadows']['shadow_train_seconds']:.1f} s",
                        )
                    ]
                    if "shadows" in summary
                    else []
                ),
            ],
        )
    )
