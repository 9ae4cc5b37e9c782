"""Options declared once as `Annotated` aliases and reused by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.data import DATA_ROOT_ENV

RunArg = Annotated[Path, typer.Argument(help="Run directory (created by `unlearn train`).")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        envvar=DATA_ROOT_ENV,
        help="Folder holding dataset files (MNIST/raw, medmnist/<flag>.npz). "
        "Default: ~/.cache/unlearn/data.",
    ),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Download missing dataset files (needs internet).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same result.")]
IdsOpt = Annotated[str | None, typer.Option("--ids", help="Sample ids to forget, e.g. 3,17,256.")]
IdsFileOpt = Annotated[
    Path | None,
    typer.Option("--ids-file", help="File of ids: one per line, .npy, or a JSON list."),
]
ClassOpt = Annotated[
    list[str] | None,
    typer.Option("--class", help="Every sample of a class (index or name); repeatable."),
]
