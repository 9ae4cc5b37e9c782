"""Options declared once as `Annotated` aliases and reused by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.data import DATA_ROOT_ENV
from unlearn_cli.location import location
from unlearn_cli.requests import ForgetRequest, parse_id_list, parse_name_list

RunArg = Annotated[
    Path,
    typer.Argument(
        help="Run directory (created by `unlearn train`): a path, or a URL such as "
        "s3://bucket/runs/mnist.",
        parser=location,
    ),
]
VersionOpt = Annotated[
    int | None,
    typer.Option(
        "--version",
        help="The model version to use (default: the newest live one). Not `unlearn "
        "--version`, which prints the tool's version.",
    ),
]
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
AlphaOpt = Annotated[
    float,
    typer.Option(
        "--alpha",
        help="The evidence's false-positive rate: a forget sample is flagged when it scores "
        "above all but this share of held-out samples.",
    ),
]
MaxResidualOpt = Annotated[
    float | None,
    typer.Option(
        "--max-residual",
        help="Gate (exit 3): fail if the evidence still flags more than this share of the "
        "forget set, beyond what chance explains (0: nothing beyond chance; needs shadows).",
        show_default=False,
    ),
]
IdsOpt = Annotated[str | None, typer.Option("--ids", help="Sample ids to forget, e.g. 3,17,256.")]
IdsFileOpt = Annotated[
    Path | None,
    typer.Option("--ids-file", help="File of ids: one per line, .npy, or a JSON list."),
]
ClassOpt = Annotated[
    list[str] | None,
    typer.Option("--class", help="Every sample of a class (index or name); repeatable."),
]
KeysOpt = Annotated[
    str | None,
    typer.Option("--keys", help="Sample keys (paths or manifest ids), comma-separated."),
]
KeysFileOpt = Annotated[
    Path | None, typer.Option("--keys-file", help="File of keys, one per line.")
]
SubjectOpt = Annotated[
    str | None,
    typer.Option("--subject", help="Data subjects (e.g. patient ids), comma-separated."),
]
SubjectsFileOpt = Annotated[
    Path | None, typer.Option("--subjects-file", help="File of data subjects, one per line.")
]


def make_request(
    ids: str | None,
    ids_file: Path | None,
    classes: list[str] | None,
    keys: str | None,
    keys_file: Path | None,
    subjects: str | None,
    subjects_file: Path | None,
) -> ForgetRequest:
    """A request from the shared options of forget and eval."""
    return ForgetRequest(
        ids=parse_id_list(ids) if ids else (),
        ids_file=ids_file,
        classes=tuple(classes or ()),
        keys=parse_name_list(keys) if keys else (),
        keys_file=keys_file,
        subjects=parse_name_list(subjects) if subjects else (),
        subjects_file=subjects_file,
    )
