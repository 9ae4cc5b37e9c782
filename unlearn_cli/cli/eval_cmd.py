"""`unlearn eval RUN`: how well a version forgot, with gates for CI (exit 3 when one fails)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearn_cli.cli.console import emit_json, err, human_bytes, out, say
from unlearn_cli.cli.options import (
    ClassOpt,
    DataRootOpt,
    DownloadOpt,
    IdsFileOpt,
    IdsOpt,
    JsonOpt,
    RunArg,
)
from unlearn_cli.errors import UnlearnError
from unlearn_cli.evaluation import evaluate
from unlearn_cli.fileio import atomic_write_json
from unlearn_cli.plotting import plot_eval, require_matplotlib
from unlearn_cli.requests import ForgetRequest, parse_id_list

GATE_EXIT = 3


def _gate(help: str):
    return typer.Option(help=help + " (a fraction, 0..1).", show_default=False)


def eval_cmd(
    run: RunArg,
    version: Annotated[
        int | None, typer.Option("--version", help="Version to judge (default: the latest).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="What forgetting should look like, typically a `retrain` version: "
            "N (a version of this run), a run directory, or RUN@N.",
        ),
    ] = None,
    ids: IdsOpt = None,
    ids_file: IdsFileOpt = None,
    classes: ClassOpt = None,
    json_out: JsonOpt = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON document to this file.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a PNG: per-class accuracy and loss distributions."),
    ] = None,
    max_forget_acc: Annotated[float | None, _gate("Fail if forget accuracy is above")] = None,
    min_retain_acc: Annotated[float | None, _gate("Fail if retained accuracy is below")] = None,
    min_test_acc: Annotated[float | None, _gate("Fail if test accuracy is below")] = None,
    max_member_rate: Annotated[
        float | None, _gate("Fail if the MIA member rate on the forget set is above")
    ] = None,
    max_loss_auc: Annotated[
        float | None, _gate("Fail if the forget-vs-test loss AUC is above")
    ] = None,
    max_avg_gap: Annotated[
        float | None, _gate("Fail if the average gap to --reference is above")
    ] = None,
    max_js: Annotated[
        float | None, _gate("Fail if the JS divergence from --reference on the forget set is above")
    ] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
) -> None:
    """Judge how well a version forgot: accuracy, membership inference, gap to a reference.

    The forget set is what the version forgot (its ledger), or --ids/--ids-file/--class
    for a version not yet unlearned.
    """
    if plot is not None:
        require_matplotlib()
    for option, path in (("--out", out_file), ("--plot", plot)):
        if path is not None and not path.parent.is_dir():
            raise UnlearnError(
                f"{option} {path}: the folder {path.parent} does not exist.",
                hint="create it first, or write elsewhere",
            )
    request = ForgetRequest(
        ids=parse_id_list(ids) if ids else (), ids_file=ids_file, classes=tuple(classes or ())
    )
    gates = {
        "max_forget_acc": max_forget_acc,
        "min_retain_acc": min_retain_acc,
        "min_test_acc": min_test_acc,
        "max_member_rate": max_member_rate,
        "max_loss_auc": max_loss_auc,
        "max_avg_gap": max_avg_gap,
        "max_js": max_js,
    }
    result, losses = evaluate(run, version, reference, request, gates, data_root, download)
    if plot is not None:
        plot_eval(result, losses, plot)
        say(f"plot written to {plot}")
    if out_file is not None:
        atomic_write_json(out_file, result)
    if json_out:
        emit_json(result)
    else:
        render(result, out)
    for warning in result["warnings"]:
        say(f"[yellow]warning:[/] {warning}")
    failed = [g for g in result["gates"] if not g["passed"]]
    for g in failed:
        err.print(
            f"gate failed: --{g['gate'].replace('_', '-')} {g['limit']:g}: "
            f"{g['metric']} is {_num(g['value'])}",
            markup=False,
        )
    if failed:
        raise typer.Exit(GATE_EXIT)


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


ROWS = [  # key, label, what "good" looks like, how to show it
    ("forget_acc", "forget acc %", "≈ ref", _pct),
    ("retain_acc", "retained acc %", "high", _pct),
    ("test_acc", "test acc %", "high", _pct),
    ("member_rate", "MIA member rate %", "≈ ref; low", _pct),
    ("loss_auc", "MIA loss AUC", "≈ 0.5", _num),
]
NOTE = (
    "UA (unlearning accuracy) = 100 − forget acc. MIA member rate: share of the forget set "
    "that a logistic regression on loss, confidence "
    "and entropies (fit on retained-train vs test samples) calls a training member. "
    "MIA loss AUC: how well loss alone tells forget from test samples (0.5 = not at all)."
)


def render(result: dict, console: Console) -> None:
    models = result["models"]
    columns = [k for k in ("original", "version", "reference") if k in models]
    fs = result["forget_set"]
    table = Table(
        title=f"eval: version {result['version']:04d} ({result['cost']['method']}); forget set: "
        f"{fs['size']} samples from the {fs['source']}",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("good when")
    headers = {"original": "original", "version": "unlearned", "reference": "reference"}
    for key in columns:
        table.add_column(headers[key], justify="right")
    gap = result["gap"]
    if gap is not None:
        table.add_column("gap", justify="right")
    for key, label, good, show in ROWS:
        cells = [show(models[c].get(key)) for c in columns]
        if gap is not None:
            cells.append(show(gap.get(key)) if key in gap else "")
        table.add_row(label, good, *cells)
    console.print(table)
    console.print(NOTE, style="dim")
    extra = []
    if gap is not None:
        extra += [
            ("average gap to reference %", _pct(gap["average"]), "low"),
            ("JS divergence on forget set", _num(gap["js_divergence"]), "bits; ≈ 0"),
            ("weight distance to reference", _num(gap["weight_distance"]["relative"]), "rel. L2"),
        ]
    sparse = result["sparsity"]
    for who in ("version", "reference"):
        if sparse[who] is not None:
            extra.append((f"sparsity of the {who}", _pct(sparse[who]["overall"]), ""))
    if result["mask_overlap"] is not None:
        extra.append(
            ("mask overlap with reference", _num(result["mask_overlap"]["overall"]), "IoU; → 1")
        )
    cost = result["cost"]
    if cost["unlearn_seconds"] is not None:
        extra.append(("unlearning wall time", f"{cost['unlearn_seconds']:.2f} s", ""))
    if cost["bytes_read"]:
        extra.append(("bytes read", human_bytes(cost["bytes_read"]), ""))
    if cost["speedup"]:
        extra.append(
            (
                "speed-up over reference",
                f"{cost['speedup']:.0f}× ({cost['reference_seconds']:.2f} s)",
                "",
            )
        )
    for g in result["gates"]:
        verdict = "pass" if g["passed"] else "FAIL"
        extra.append(
            (
                f"gate --{g['gate'].replace('_', '-')} {g['limit']:g}",
                f"{verdict} ({_num(g['value'])})",
                "",
            )
        )
    if extra:
        summary = Table(show_header=False, title_justify="left")
        summary.add_column(style="bold")
        summary.add_column(justify="right")
        summary.add_column()
        for row in extra:
            summary.add_row(*row)
        console.print(summary)
