"""`unlearn storage-report RUN`: what the recorded updates cost on disk."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.cli.render import render_storage
from unlearn_cli.ops.storage_report import storage_report as build_report


def storage_report(
    run: RunArg,
    project_epochs: Annotated[int, typer.Option(help="Epochs for the size projection.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Per-layer and total bytes of the update store, against dense and the information bound."""
    report = build_report(run, project_epochs)
    show(report, json_out, render_storage)
