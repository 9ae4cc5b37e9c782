"""`unlearn shadows RUN -k K`: build the shadow models the per-example evidence needs."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import kv_table, out, show
from unlearn_cli.cli.options import DataRootOpt, DownloadOpt, JsonOpt, RunArg
from unlearn_cli.cli.progress import progress
from unlearn_cli.ops.shadows import DEFAULT_SHADOWS, build_shadows


def shadows(
    run: RunArg,
    k: Annotated[
        int,
        typer.Option(
            "-k",
            "--shadows",
            help="How many shadow models (even: they come in pairs that split the data in "
            "halves). 8 is a good start; more narrow the evidence's noise.",
        ),
    ] = DEFAULT_SHADOWS,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train shadow models of the run (once; later commands reuse them), so that every
    forget receipt and eval carries per-example evidence of forgetting."""
    summary = build_shadows(run, k, data_root=data_root, download=download, progress=progress())
    show(summary, json_out, render_shadows)


def render_shadows(summary: dict) -> None:
    cost = summary["cost_vs_training"]
    out.print(
        kv_table(
            f"shadow models of {summary['run']}",
            [
                ("kept at", summary["path"]),
                (
                    "shadows",
                    f"{summary['shadows']} ({summary['trained_now']} trained now, "
                    f"{summary['reused']} reused)",
                ),
                ("pool", f"{summary['pool']:,} samples (training, then test split)"),
                (
                    "training time",
                    f"{summary['shadow_train_seconds']:.1f} s in all"
                    + (f" ({cost:.1f}× the run's training)" if cost else ""),
                ),
                ("wall time", f"{summary['seconds']:.1f} s"),
            ],
        )
    )
