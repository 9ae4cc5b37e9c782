"""`unlearn eval RUN`: how well a version forgot, with gates for CI (exit 3 when one fails)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_cli.cli.console import emit_json, fail_gates, say, warn
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
    make_request,
)
from unlearn_cli.cli.progress import progress
from unlearn_cli.cli.render import render_eval
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
    if json_out:
        emit_json(result)
    else:
        render_eval(result)
    for warning in result["warnings"]:
        warn(warning)
    fail_gates(result)
