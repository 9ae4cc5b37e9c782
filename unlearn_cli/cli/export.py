"""`unlearn export RUN --out FILE`: a version's weights for other code, with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import show
from unlearn_cli.cli.options import JsonOpt, RunArg, VersionOpt
from unlearn_cli.cli.render import render_export
from unlearn_cli.ops.export import export_version


def export(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", help="File to write (e.g. model.safetensors).")],
    version: VersionOpt = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="safetensors (default) or torch (a torch.save state dict)."),
    ] = "safetensors",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file at --out.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a version's weights to a file, with a JSON sidecar <out>.json of provenance."""
    result = export_version(run, version, out, fmt, force)
    show(result, json_out, render_export)
