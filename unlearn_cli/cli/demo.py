"""`unlearn demo`: the whole pipeline on the bundled digits dataset, offline."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from unlearn_cli.cli.console import kv_table, out, say
from unlearn_cli.cli.progress import progress
from unlearn_cli.cli.render import render_eval, render_forget, render_storage
from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.storage_report import storage_report
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.training import TrainConfig

DEMO_CONFIG = TrainConfig(dataset="digits", model="lenet", epochs=8, lr=0.02)
DEMO_REQUEST = 3  # random training samples to forget (each sits in 8 of 360 steps)


def demo(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to keep the demo run (default: a new temp folder)."),
    ] = None,
) -> None:
    """Train LeNet on digits with recorded updates, forget samples, compare with retraining."""
    path = out_dir or Path(tempfile.mkdtemp(prefix="unlearn-demo-")) / "run"
    say(f"[bold]1/5[/] training lenet on digits into {path}")
    summary = train_run(
        DEMO_CONFIG, RecordConfig(), path, force=out_dir is not None, progress=progress()
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
    n_train = Run.open(path).meta["dataset"]["n_train"]
    ids = np.sort(np.random.default_rng(DEMO_CONFIG.seed).choice(n_train, DEMO_REQUEST, False))
    request = ForgetRequest(ids=tuple(ids.tolist()))
    say(f"[bold]2/5[/] forgetting {DEMO_REQUEST} random samples (method: auto)")
    forgotten = forget_run(path, ForgetConfig("auto"), request)
    say(f"auto chose {forgotten['method']}: {forgotten['auto']['why']}")
    render_forget(forgotten)
    say("[bold]3/5[/] retraining without them, as the exact reference")
    retrain = ForgetConfig("retrain", from_version=0)
    reference = forget_run(path, retrain, request, progress=progress())
    say("[bold]4/5[/] storage report")
    render_storage(storage_report(path))
    say("[bold]5/5[/] eval: the unlearned version against the retrained reference")
    result, _ = evaluate(path, forgotten["version"], str(reference["version"]))
    render_eval(result)
    say(
        f"run kept at {path}; try: unlearn eval {path} --version {forgotten['version']} "
        f"--reference {reference['version']}"
    )
