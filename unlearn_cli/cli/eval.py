"""`unlearn eval RUN`: how well a version forgot, with gates for CI (exit 3 when one fails)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearn_cli.cli.console import fail_gates, human_bytes, out, say, show
from unlearn_cli.cli.evidence_view import UNSEEN_NOTE, evidence_table
from unlearn_cli.cli.options import (
    AlphaOpt,
    ClassOpt,
    DataRootOpt,
    DownloadOpt,
    IdsFileOpt,
    IdsOpt,
    JsonOpt,
    KeysFileOpt,
    KeysOpt,
    MaxResidualOpt,
    RunArg,
    SubjectOpt,
    SubjectsFileOpt,
    VersionOpt,
    make_request,
)
from unlearn_cli.cli.progress import progress
from unlearn_cli.errors import UnlearnError
from unlearn_cli.evidence import ALPHA
from unlearn_cli.fileio import atomic_write_json
from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.plotting import plot_eval, require_matplotlib
from unlearn_cli.rundir import CACHE_ENV


def _gate(help: str):
    return typer.Option(help=help + " (a fraction, 0..1).", show_default=False)


# Long only in its option declarations (one per flag, as Typer wants them).
def eval_cmd(
    run: RunArg,
    version: VersionOpt = None,
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
    keys: KeysOpt = None,
    keys_file: KeysFileOpt = None,
    subject: SubjectOpt = None,
    subjects_file: SubjectsFileOpt = None,
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
    max_lira_auc: Annotated[
        float | None, _gate("Fail if the likelihood-ratio attack's AUC (needs --shadows) is above")
    ] = None,
    max_avg_gap: Annotated[
        float | None, _gate("Fail if the average gap to --reference is above")
    ] = None,
    max_js: Annotated[
        float | None, _gate("Fail if the JS divergence from --reference on the forget set is above")
    ] = None,
    max_residual: MaxResidualOpt = None,
    alpha: AlphaOpt = ALPHA,
    shadows: Annotated[
        int | None,
        typer.Option(
            "--shadows",
            help="Train K shadow models (even; 8 is a good start) where the run lacks them, for "
            "the per-example evidence and the likelihood-ratio attack (LiRA). They train with "
            "the run's config on random halves of the data, once: later commands reuse them "
            "from RUN/shadows/ (as `unlearn shadows RUN -k K` builds them). Without it, eval "
            "uses the shadows the run has.",
            show_default=False,
        ),
    ] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache",
            envvar=CACHE_ENV,
            help="Keep models read from object storage in this folder (by content hash), so "
            "later evals do not fetch them again.",
        ),
    ] = None,
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
    request = make_request(ids, ids_file, classes, keys, keys_file, subject, subjects_file)
    gates = {
        "max_forget_acc": max_forget_acc,
        "min_retain_acc": min_retain_acc,
        "min_test_acc": min_test_acc,
        "max_member_rate": max_member_rate,
        "max_loss_auc": max_loss_auc,
        "max_lira_auc": max_lira_auc,
        "max_avg_gap": max_avg_gap,
        "max_js": max_js,
        "max_residual": max_residual,
    }
    result, losses = evaluate(
        run,
        version,
        reference,
        request,
        gates,
        data_root,
        download,
        progress(),
        cache,
        shadows,
        alpha,
    )
    if plot is not None:
        plot_eval(result, losses, plot)
        say(f"plot written to {plot}")
    if out_file is not None:
        atomic_write_json(out_file, result)
    show(result, json_out, render_eval)
    fail_gates(result)


def num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


ROWS = [  # key, label, what "good" looks like, how to show it
    ("forget_acc", "forget acc %", "≈ ref", _pct),
    ("retain_acc", "retained acc %", "high", _pct),
    ("test_acc", "test acc %", "high", _pct),
    ("member_rate", "MIA member rate %", "≈ ref; low", _pct),
    ("loss_auc", "MIA loss AUC", "≈ 0.5", num),
]
LIRA_ROWS = [  # with --shadows
    ("lira_auc", "LiRA AUC", "≈ ref; ≈ 0.5", num),
    ("lira_tpr_at_1pct_fpr", "LiRA TPR @ 1% FPR %", "≈ ref; low", _pct),
    ("lira_tpr_at_0_1pct_fpr", "LiRA TPR @ 0.1% FPR %", "≈ ref; low", _pct),
]
NOTE = (
    "UA (unlearning accuracy) = 100 − forget acc. MIA member rate: share of the forget set "
    "that a logistic regression on loss, confidence "
    "and entropies (fit on retained-train vs test samples) calls a training member. "
    "MIA loss AUC: how well loss alone tells forget from test samples (0.5 = not at all)."
)
LIRA_NOTE = (
    " LiRA: the per-example likelihood-ratio attack from {k} shadow models; AUC of telling "
    "the forget set from {n} test samples, and the share of the forget set it catches when "
    "it may wrongly accuse 1% (0.1%) of test samples."
)


def render_eval(result: dict, console: Console = out) -> None:
    evidence = result["evidence"]
    if evidence["verified"]:
        console.print(evidence_table(evidence))
    console.print(metrics_table(result))
    if not evidence["verified"]:
        console.print(UNSEEN_NOTE.format(why=evidence["why"][:1].upper() + evidence["why"][1:]))
    lira = result.get("lira")
    note = NOTE + (LIRA_NOTE.format(k=lira["shadows"], n=lira["held_out"]) if lira else "")
    console.print(note, style="dim")
    rows = summary_rows(result)
    if rows:
        summary = Table(show_header=False, title_justify="left")
        summary.add_column(style="bold")
        summary.add_column(justify="right")
        summary.add_column()
        for row in rows:
            summary.add_row(*row)
        console.print(summary)


def gate_row(g: dict) -> tuple[str, str, str]:
    verdict = "pass" if g["passed"] else "FAIL"
    return (
        f"gate --{g['gate'].replace('_', '-')} {g['limit']:g}",
        f"{verdict} ({num(g['value'])})",
        "",
    )


def metrics_table(result: dict) -> Table:
    """One row per metric, one column per model (and the gap to the reference)."""
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
    for key, label, good, fmt in ROWS + (LIRA_ROWS if result.get("lira") else []):
        cells = [fmt(models[c].get(key)) for c in columns]
        if gap is not None:
            cells.append(fmt(gap.get(key)) if key in gap else "")
        table.add_row(label, good, *cells)
    return table


def summary_rows(result: dict) -> list[tuple[str, str, str]]:
    """Gap, sparsity, cost and gate lines under the metrics table."""
    rows = []
    gap = result["gap"]
    if gap is not None:
        rows += [
            ("average gap to reference %", _pct(gap["average"]), "low"),
            ("JS divergence on forget set", num(gap["js_divergence"]), "bits; ≈ 0"),
            ("weight distance to reference", num(gap["weight_distance"]["relative"]), "rel. L2"),
        ]
    sparse = result["sparsity"]
    for who in ("version", "reference"):
        if sparse[who] is not None:
            rows.append((f"sparsity of the {who}", _pct(sparse[who]["overall"]), ""))
    if result["mask_overlap"] is not None:
        overlap = num(result["mask_overlap"]["overall"])
        rows.append(("mask overlap with reference", overlap, "IoU; → 1"))
    cost = result["cost"]
    if cost["unlearn_seconds"] is not None:
        rows.append(("unlearning wall time", f"{cost['unlearn_seconds']:.2f} s", ""))
    if cost["bytes_read"]:
        rows.append(("bytes read", human_bytes(cost["bytes_read"]), ""))
    if cost["speedup"]:
        speedup = f"{cost['speedup']:.0f}× ({cost['reference_seconds']:.2f} s)"
        rows.append(("speed-up over reference", speedup, ""))
    rows += [gate_row(g) for g in result["gates"]]
    return rows
