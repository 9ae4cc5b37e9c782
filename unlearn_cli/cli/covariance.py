"""`unlearn covariance RUN`: measure the layer-input covariances that `pgu` needs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from unlearn_cli.cli.console import human_bytes, kv_table, out, show
from unlearn_cli.cli.options import DataRootOpt, DownloadOpt, JsonOpt, RunArg, VersionOpt
from unlearn_cli.cli.progress import progress
from unlearn_cli.ops.covariance import compute_covariance


def covariance(
    run: RunArg,
    version: VersionOpt = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="float32 or float64: the stored singular vectors, and the precision of "
            "the products summed (in float64) into the covariances."
        ),
    ] = "float32",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run's existing covariances.")
    ] = False,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Store each conv/linear layer's input covariance (SVD) over the retained training
    samples, so that `forget --method pgu` needs no retained data later."""
    summary = compute_covariance(
        run,
        version,
        data_root=data_root,
        download=download,
        force=force,
        dtype=dtype,
        batch_size=batch_size,
        progress=progress(),
    )
    show(summary, json_out, render_covariance)


def render_covariance(summary: dict) -> None:
    out.print(
        kv_table(
            f"layer covariances of {summary['run']}",
            [
                ("stored at", summary["path"]),
                ("measured on version", summary["version"]),
                (
                    "training samples",
                    f"{summary['samples']:,} (forgotten left out: {summary['excluded']:,})",
                ),
                ("singular vectors", summary["dtype"]),
                ("size on disk", human_bytes(summary["bytes"])),
                ("wall time", f"{summary['seconds']:.1f} s"),
            ],
        )
    )
    table = Table(box=box.SIMPLE, title="directions per layer", title_justify="left")
    for col in ("layer", "input dim", "kept at γ 0.95"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for layer in summary["layers"]:
        table.add_row(layer["name"], f"{layer['dim']:,}", f"{layer['kept_at_0.95']:,}")
    out.print(table)
