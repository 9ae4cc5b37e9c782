"""`unlearn prune RUN`: iterative magnitude pruning of a version into a sparse version."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import kv_table, out, show
from unlearn_cli.cli.options import DataRootOpt, DownloadOpt, JsonOpt, RunArg
from unlearn_cli.cli.progress import progress
from unlearn_cli.ops.prune import prune_run
from unlearn_cli.pruning import PruneSchedule

P = PruneSchedule


def prune(
    run: RunArg,
    sparsity: Annotated[
        float, typer.Option("--sparsity", help="Share of each conv/linear weight tensor to prune.")
    ],
    rounds: Annotated[
        int, typer.Option(help="Pruning rounds: round r prunes to 1-(1-S)^(r/R).")
    ] = P.rounds,
    finetune_epochs: Annotated[
        int, typer.Option(help="Epochs of fine-tuning on retained samples after each round.")
    ] = P.finetune_epochs,
    lr: Annotated[
        float | None, typer.Option(help="Fine-tuning learning rate (default: the run's).")
    ] = None,
    from_version: Annotated[
        int | None, typer.Option("--from", help="Version to prune (default: the latest).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for fine-tuning (default: the run's).")
    ] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Prune a version's conv/linear weights by magnitude, fine-tuning between rounds;
    writes a new version with its masks."""
    result = prune_run(
        run,
        PruneSchedule(sparsity, rounds, finetune_epochs, lr),
        from_version=from_version,
        seed=seed,
        data_root=data_root,
        download=download,
        progress=progress(),
    )
    show(result, json_out, render_prune)


def render_prune(result: dict) -> None:
    out.print(
        kv_table(
            "pruned",
            [
                ("new version", f"{result['version']:04d} (from {result['parent']:04d})"),
                ("sparsity", f"{result['sparsity']['overall']:.2%}"),
                ("rounds", ", ".join(f"{r['sparsity']:.1%}" for r in result["rounds"])),
                ("test accuracy", f"{result['test_accuracy']:.2%}"),
                ("wall time", f"{result['wall_seconds']:.1f} s"),
            ],
        )
    )
