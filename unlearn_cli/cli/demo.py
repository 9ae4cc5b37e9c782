"""`unlearn demo`: the whole pipeline on the bundled digits dataset, offline."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import RichProgress, kv_table, out, say
from unlearn_cli.cli.storage_report import render as render_storage
from unlearn_cli.rundir import Run
from unlearn_cli.runner import RecordConfig, train_run
from unlearn_cli.storage_report import storage_report
from unlearn_cli.training import TrainConfig


def demo(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to keep the demo run (default: a new temp folder)."),
    ] = None,
) -> None:
    """Train LeNet on scikit-learn's digits with recorded updates, then report storage."""
    path = out_dir or Path(tempfile.mkdtemp(prefix="unlearn-demo-")) / "run"
    say(f"[bold]1/2[/] training lenet on digits into {path}")
    summary = train_run(
        TrainConfig(dataset="digits", model="lenet", epochs=8, lr=0.02),
        RecordConfig(),
        path,
        force=out_dir is not None,
        progress=RichProgress(),
    )
    out.print(
        kv_table(
            "trained",
            [
                ("test accuracy", f"{summary['test_accuracy']:.2%}"),
                ("steps", summary["steps"]),
                ("wall time", f"{summary['train_seconds']:.1f} s"),
            ],
        )
    )
    say("[bold]2/2[/] storage report")
    render_storage(storage_report(Run.open(path)))
    say(f"run kept at {path}")
