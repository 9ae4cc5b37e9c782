"""`unlearn covariance RUN`: measure the layer-input covariances that `pgu` needs."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import show
from unlearn_cli.cli.options import DataRootOpt, DownloadOpt, JsonOpt, RunArg, VersionOpt
from unlearn_cli.cli.progress import progress
from unlearn_cli.cli.render import render_covariance
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
