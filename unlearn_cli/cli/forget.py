"""`unlearn forget RUN`: apply a deletion request with a method; writes the next version."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from unlearn_cli.cli.console import emit_json, warn
from unlearn_cli.cli.options import (
    ClassOpt,
    DataRootOpt,
    DeviceOpt,
    DownloadOpt,
    IdsFileOpt,
    IdsOpt,
    JsonOpt,
    RunArg,
)
from unlearn_cli.cli.progress import progress
from unlearn_cli.cli.render import render_forget
from unlearn_cli.methods import METHODS
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.pruned import UnpruneParams
from unlearn_cli.params import build_params, parse_pairs
from unlearn_cli.requests import ForgetRequest, parse_id_list


def forget(
    run: RunArg,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Unlearning method (see `unlearn list methods`).")
    ],
    ids: IdsOpt = None,
    ids_file: IdsFileOpt = None,
    classes: ClassOpt = None,
    params: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method parameter key=value; repeatable."),
    ] = None,
    from_version: Annotated[
        int | None, typer.Option("--from", help="Version to start from (default: the latest).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for the method (default: the run's).")
    ] = None,
    unprune: Annotated[
        bool,
        typer.Option(
            "--unprune",
            help="On a pruned version: re-grow pruned weights, run the method, re-prune "
            "(-p grow=0.1 -p rounds=1).",
        ),
    ] = False,
    device: DeviceOpt = "cpu",
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Forget samples: write a new model version, a receipt and a ledger entry."""
    request = ForgetRequest(
        ids=parse_id_list(ids) if ids else (),
        ids_file=ids_file,
        classes=tuple(classes or ()),
    )
    config = forget_config(method, params or [], unprune, from_version, seed, device)
    result = forget_run(
        run, config, request, data_root=data_root, download=download, progress=progress()
    )
    if json_out:
        emit_json(result)
    else:
        render_forget(result)
    for warning in result["warnings"]:
        warn(warning)


def forget_config(
    method: str,
    pairs: list[str],
    unprune: bool,
    from_version: int | None,
    seed: int | None,
    device: str,
) -> ForgetConfig:
    """Typed settings from the command line: `-p` pairs go to the method, except
    --unprune's own (grow, rounds) when --unprune is given."""
    params_of = METHODS.get(method).params
    unprune_params = None
    if unprune:
        ours = {f.name for f in dataclasses.fields(UnpruneParams)}
        mine = [p for p in pairs if p.partition("=")[0].strip() in ours]
        pairs = [p for p in pairs if p not in mine]
        values = parse_pairs("--unprune", UnpruneParams, mine)
        unprune_params = build_params("--unprune", UnpruneParams, values)
    params = parse_pairs(method, params_of, pairs)
    return ForgetConfig(method, params, unprune_params, from_version, seed, device)
