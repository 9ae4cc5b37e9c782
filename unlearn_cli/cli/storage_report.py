"""`unlearn storage-report RUN`: what the recorded updates cost on disk."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from unlearn_cli.cli.console import human_bytes, kv_table, out, show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.ops.storage_report import storage_report as build_report


def storage_report(
    run: RunArg,
    project_epochs: Annotated[int, typer.Option(help="Epochs for the size projection.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Per-layer and total bytes of the update store, against dense and the information bound."""
    report = build_report(run, project_epochs)
    show(report, json_out, render_storage)


def render_storage(report: dict) -> None:
    table = Table(title=f"update store of {report['run']}", title_justify="left", box=box.SIMPLE)
    table.add_column("layer", no_wrap=True)
    for col in ("params", "kept", "index", "values", "bits", "÷dense", "÷bound"):
        table.add_column(col, justify="right", no_wrap=True)
    for layer in report["layers"]:
        size = layer["index_bytes"] + layer["value_bytes"]
        table.add_row(
            layer["name"],
            f"{layer['params']:,}",
            kept_count(layer),
            human_bytes(layer["index_bytes"]),
            human_bytes(layer["value_bytes"]),
            f"{layer['bits_per_entry']:.1f}",
            f"1/{layer['dense_fp32_bytes'] / size:.1f}" if size else "-",
            f"{size / layer['information_bound_bytes']:.2f}"
            if layer["information_bound_bytes"]
            else "-",
        )
    out.print(table)
    carried = [kept_share(layer) for layer in report["layers"] if layer["variable"]]
    if carried:
        out.print("share kept per step, within the tolerance: mean (min–max), requested")
        for line in carried:
            out.print("  " + line)
    proj = report["projection"]
    out.print(
        kv_table(
            "totals",
            [
                (
                    "steps recorded",
                    f"{report['steps']:,}" + ("" if report["complete"] else " (incomplete run)"),
                ),
                ("values", report["value_dtype"]),
                ("update records", human_bytes(report["update_bytes"])),
                ("sample index", human_bytes(report["sample_index_bytes"])),
                (
                    "total on disk",
                    f"{human_bytes(report['total_bytes'])} in {report['files']} files",
                ),
                ("bits per kept entry", f"{report['bits_per_kept_entry']:.1f}"),
                (
                    "dense fp32 amnesiac record",
                    f"{human_bytes(report['dense_fp32_bytes'])} "
                    f"({report['ratio_to_dense_fp32']:.1f}× larger)",
                ),
                (
                    "information bound",
                    f"{human_bytes(report['information_bound_bytes'])} "
                    f"(ours is {report['ratio_to_information_bound']:.2f}×)",
                ),
                (f"projected for {proj['epochs']} epochs", human_bytes(proj["bytes"])),
                *(
                    (f"pgu covariances ({c['where']})", human_bytes(c["bytes"]))
                    for c in report["covariance"]
                ),
            ],
        )
    )


def kept_count(layer: dict) -> str:
    """Entries a step kept: k, or about the mean where the count varies."""
    if not layer["variable"]:
        return f"{layer['kept_per_step']:,}"
    return f"~{round(layer['kept_share']['mean'] * layer['params']):,}"


def kept_share(layer: dict) -> str:
    """A carried layer's achieved share, mean (min–max), against the requested one."""
    share = layer["kept_share"]
    return (
        f"{layer['name']}: {share['mean']:.4f} ({share['min']:.4f}–{share['max']:.4f}), "
        f"{layer['keep']:.4f}"
    )
