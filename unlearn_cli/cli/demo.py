"""`unlearn demo`: the whole pipeline on the bundled digits dataset, offline.

A data-quality request, the kind whose removal shows: 3% of the training labels are made
wrong, the model memorizes them, and forgetting them is judged sample by sample against
shadow models that never saw each one (the per-example evidence), not by an average.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import kv_table, out, say
from unlearn_cli.cli.eval import render_eval
from unlearn_cli.cli.forget import render_forget
from unlearn_cli.cli.progress import progress
from unlearn_cli.cli.storage_report import render_storage
from unlearn_cli.data.digits import write_mislabeled
from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.storage_report import storage_report
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.train_config import TrainConfig

MISLABELED = 0.03  # of the training labels made wrong
# Long enough to memorize them: 72% of the 43 flagged by the evidence (8 shadows), 89%
# test accuracy; about 6 s of training and shadows on 2 CPU cores.
DEMO_CONFIG = TrainConfig(model="lenet", epochs=20, lr=0.05)
DEMO_SHADOWS = 8


def demo(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to keep the demo run (default: a new temp folder)."),
    ] = None,
) -> None:
    """Train LeNet on digits with 3% of the labels wrong, forget those samples, check each
    one against shadow models, and compare with retraining."""
    path = out_dir or Path(tempfile.mkdtemp(prefix="unlearn-demo-")) / "run"
    data = path.parent / f"{path.name}-mislabeled-digits.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    wrong = write_mislabeled(data, MISLABELED, DEMO_CONFIG.seed)
    say(
        f"[bold]1/5[/] {wrong.size} of the digits' training labels made wrong ({data}); "
        f"training lenet on them, with {DEMO_SHADOWS} shadow models, into {path}"
    )
    config = TrainConfig(**{**DEMO_CONFIG.__dict__, "dataset": f"npz:{data}"})
    summary = train_run(
        config,
        RecordConfig(),
        path,
        force=out_dir is not None,
        progress=progress(),
        shadows=DEMO_SHADOWS,
    )
    out.print(
        kv_table(
            "trained",
            [
                ("test accuracy", f"{summary['test_accuracy']:.2%}"),
                ("steps", summary["steps"]),
                ("wall time", f"{summary['train_seconds']:.1f} s"),
                ("shadow models", f"{DEMO_SHADOWS} in {summary['shadows']['seconds']:.1f} s"),
            ],
        )
    )
    request = ForgetRequest(ids=tuple(wrong.tolist()))
    say(f"[bold]2/5[/] forgetting the {wrong.size} mislabeled samples (method: auto)")
    forgotten = forget_run(path, ForgetConfig("auto"), request, progress=progress())
    tried = " then ".join(a["method"] for a in forgotten["auto"]["attempts"])
    say(f"auto tried {tried}; first choice because {forgotten['auto']['why']}")
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
