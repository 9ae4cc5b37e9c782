"""`unlearn export RUN --out FILE`: a version's weights for other code, with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import out, show
from unlearn_cli.cli.options import JsonOpt, RunArg, VersionOpt
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


def render_export(result: dict) -> None:
    data = result["dataset"]
    out.print(
        f"exported version {result['version']:04d} ({result['method']}, "
        f"{result['forgotten_samples']} samples forgotten) of {result['run']}\n"
        f"  weights  {result['out']} ({result['file_format']}, model {result['model']['name']}, "
        f"hash {(result['model_hash'] or '')[:12]})\n"
        f"  sidecar  {result['sidecar']}\n"
        f"  inputs   {data['channels']}x{data['image_size']}x{data['image_size']}, "
        f"classes {', '.join(data['class_names'])}"
    )
