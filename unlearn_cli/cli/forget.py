"""`unlearn forget RUN`: apply a deletion request with a method; writes the next version."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from unlearn_cli.cli.console import fail_gates, human_bytes, kv_table, out, say, show
from unlearn_cli.cli.evidence_view import attempts_table, evidence_rows
from unlearn_cli.cli.options import (
    AlphaOpt,
    ClassOpt,
    DataRootOpt,
    DeviceOpt,
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
from unlearn_cli.evidence import ALPHA
from unlearn_cli.methods import METHODS
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.forget_plan import plan_request
from unlearn_cli.ops.pruned import UnpruneParams
from unlearn_cli.params import build_params, parse_pairs


# Long only in its option declarations (one per flag, as Typer wants them).
def forget(
    run: RunArg,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Unlearning method (see `unlearn list methods`).")
    ],
    ids: IdsOpt = None,
    ids_file: IdsFileOpt = None,
    classes: ClassOpt = None,
    keys: KeysOpt = None,
    keys_file: KeysFileOpt = None,
    subject: SubjectOpt = None,
    subjects_file: SubjectsFileOpt = None,
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
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Resolve the request and print what each method would read and cost, and "
            "what auto would choose; write nothing.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Run a subtracting method even over the share of steps it damages."
        ),
    ] = False,
    max_affected_share: Annotated[
        float | None,
        typer.Option(help="Stop before any work if the request touches more of the steps."),
    ] = None,
    max_residual: MaxResidualOpt = None,
    alpha: AlphaOpt = ALPHA,
    device: DeviceOpt = "cpu",
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Forget samples: write a new model version, a receipt and a ledger entry.

    Where the run has shadow models (`unlearn shadows`), the receipt carries the
    per-example evidence before and after; --max-residual exits 3 when it still flags
    the forget set beyond chance (the version is kept: `unlearn retire` sets it aside)."""
    request = make_request(ids, ids_file, classes, keys, keys_file, subject, subjects_file)
    config = forget_config(method, params or [], unprune, from_version, seed, device)
    config = dataclasses.replace(
        config,
        max_affected_share=max_affected_share,
        guard=not force,
        alpha=alpha,
        max_residual=max_residual,
    )
    if dry_run:
        plan = plan_request(run, config, request, data_root=data_root, download=download)
        show(plan, json_out, render_plan)
        return
    result = forget_run(
        run, config, request, data_root=data_root, download=download, progress=progress()
    )
    show(result, json_out, render_forget)
    fail_gates(result)


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
    return ForgetConfig(
        method=method,
        params=params,
        unprune=unprune_params,
        from_version=from_version,
        seed=seed,
        device=device,
    )


def render_plan(plan: dict) -> None:
    steps, ids = plan["steps"], plan["ids"]
    share = steps["affected_share"]
    out.print(
        kv_table(
            "dry run: nothing written",
            [
                ("from version", f"{plan['from_version']:04d}"),
                ("ids", f"{ids['requested']} requested, {ids['new']} new"),
                (
                    "steps affected",
                    f"{steps['affected']} of {steps['total']}"
                    + (f" ({share:.1%})" if share is not None else ""),
                ),
                ("retrain", f"{plan['retrain_steps']:,} optimizer steps"),
                ("auto would choose", f"{plan['auto']['chosen']}: {plan['auto']['why']}"),
                ("then, if needed", " → ".join(plan["auto"]["ladder"][1:]) or "nothing"),
                (
                    "flagged now",
                    "no evidence (no shadow models)"
                    if plan["evidence_before"] is None
                    else f"{plan['evidence_before']['flagged']} of "
                    f"{plan['evidence_before']['of']} by the evidence",
                ),
            ],
        )
    )
    table = Table(title="what each method would do", title_justify="left", box=box.SIMPLE)
    for col in ("method", "store rows", "store bytes", "samples", "steps", "÷ retrain", ""):
        table.add_column(col, justify="left" if col in ("method", "") else "right")
    for m in plan["methods"]:
        note = "needs a recorded trajectory" if not m["applies"] else ""
        note = note or ("over its share limit (--force)" if m["over_share_limit"] else "")
        cost = m["cost_vs_retrain"]
        table.add_row(
            m["method"],
            f"{m['store_rows']:,}",
            human_bytes(m["store_bytes"]),
            f"{m['training_samples']:,}",
            f"{m['training_steps']:,}",
            f"{cost:.1%}" if cost is not None else "–",
            note,
        )
    out.print(table)


def render_forget(result: dict) -> None:
    attempts = attempts_table(result.get("auto"))
    if attempts is not None:
        out.print(attempts)
    if result.get("noop"):
        if not result["warnings"]:  # nothing new was asked for
            say(f"nothing to do: {result['noop_reason']}; no version written")
            return
        reason = [("nothing forgotten", result["noop_reason"])]
        out.print(kv_table("no version written", reason + evidence_rows(result["evidence"])))
        return
    ids, steps = result["ids"], result["steps"]
    rows: list[tuple[str, Any]] = [
        ("new version", f"{result['version']:04d} (from {result['parent']:04d})"),
        ("method", result["method"] + (" (chosen by auto)" if result.get("auto") else "")),
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
    details = result["details"]
    if "steps_replayed" in details:
        replayed = f"{details['steps_replayed']} ({details['samples_read']:,} samples read)"
        rows.append(("steps replayed", replayed))
    sparse = result["details"].get("sparse")
    if sparse:
        rows.append(("sparsity", f"{sparse['sparsity']['overall']:.1%}"))
        how = "re-grown and re-pruned" if sparse["unprune"] else "kept"
        rows.append(("mask", f"{how}; {sparse['mask_changed']:,} weights changed side"))
    rows.append(("wall time", f"{result['wall_seconds']:.2f} s"))
    out.print(kv_table(verdict_title(result["evidence"]), rows + evidence_rows(result["evidence"])))


def verdict_title(evidence: dict) -> str:
    """The table's title says what the evidence says, never more."""
    if not evidence["verified"]:
        return "new version written; forgetting unverified (no evidence)"
    if evidence["forgotten"]:
        return "forgotten: the evidence flags no more than chance"
    return "new version written, but the evidence still flags the forget set"
