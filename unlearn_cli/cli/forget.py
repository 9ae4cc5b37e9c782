"""`unlearn forget RUN`: apply a deletion request with a method; writes the next version."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import RichProgress, emit_json, human_bytes, kv_table, out, say
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
from unlearn_cli.forgetting import forget_run
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
    result = forget_run(
        run,
        method,
        params or [],
        request,
        from_version=from_version,
        data_root=data_root,
        download=download,
        device=device,
        seed=seed,
        progress=RichProgress(),
        unprune=unprune,
    )
    if json_out:
        emit_json(result)
    else:
        render(result)
    if result.get("warning"):
        say(f"[yellow]warning:[/] {result['warning']}")


def render(result: dict) -> None:
    if result.get("noop"):
        say(
            f"nothing to do: all {result['ids']['requested']} requested ids were already "
            f"forgotten in version {result['version']}; no version written"
        )
        return
    ids, steps = result["ids"], result["steps"]
    rows = [
        ("new version", f"{result['version']:04d} (from {result['parent']:04d})"),
        ("method", result["method"]),
        ("ids requested", ids["requested"]),
        ("newly forgotten", len(ids["newly_forgotten"])),
        ("already forgotten", len(ids["already_forgotten"])),
    ]
    if steps["affected"] is not None:
        rows.append(
            (
                "steps affected",
                f"{steps['affected']} of {steps['total']} ({steps['affected_share']:.1%})",
            )
        )
    if steps["subtracted"] or steps["already_subtracted"]:
        rows.append(
            (
                "steps subtracted",
                f"{len(steps['subtracted'])} (already subtracted: {steps['already_subtracted']})",
            )
        )
    if result["bytes_read"]:
        rows.append(("bytes read", human_bytes(result["bytes_read"])))
    sparse = result["details"].get("sparse")
    if sparse:
        rows.append(("sparsity", f"{sparse['sparsity']['overall']:.1%}"))
        how = "re-grown and re-pruned" if sparse["unprune"] else "kept"
        rows.append(("mask", f"{how}; {sparse['mask_changed']:,} weights changed side"))
    rows.append(("wall time", f"{result['wall_seconds']:.2f} s"))
    out.print(kv_table("forgotten", rows))
