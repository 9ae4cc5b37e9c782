"""How each command's result is shown as tables; the demo reuses them."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from unlearn_cli.cli.console import human_bytes, kv_table, out, say
from unlearn_cli.cli.evidence_view import (
    UNSEEN_NOTE,
    attempts_table,
    evidence_rows,
    evidence_table,
)


def render_train(summary: dict) -> None:
    out.print(
        kv_table(
            f"trained {summary['model']} on {summary['dataset']}",
            [
                ("run", summary["run"]),
                ("steps", summary["steps"]),
                ("test accuracy", f"{summary['test_accuracy']:.2%}"),
                ("final loss", summary["final_loss"]),
                ("wall time", f"{summary['train_seconds']:.1f} s"),
                *(
                    [("class weights", ", ".join(f"{w:.3g}" for w in summary["class_weights"]))]
                    if "class_weights" in summary
                    else []
                ),
                *(
                    [
                        (
                            "shadow models",
                            f"{summary['shadows']['shadows']} in "
                            f"{summary['shadows']['shadow_train_seconds']:.1f} s",
                        )
                    ]
                    if "shadows" in summary
                    else []
                ),  # fmt: skip
            ],
        )
    )


def render_prune(result: dict) -> None:
    out.print(
        kv_table(
            "pruned",
            [
                ("new version", f"{result['version']:04d} (from {result['parent']:04d})"),
                ("sparsity", f"{result['sparsity']['overall']:.2%}"),
                ("rounds", ", ".join(f"{r['sparsity']:.1%}" for r in result["rounds"])),
                ("test accuracy", f"{result['test_accuracy']:.2%}"),
                ("wall time", f"{result['wall_seconds']:.1f} s"),
            ],
        )
    )


def render_log(result: dict) -> None:
    table = Table(title=f"versions of {result['run']}", title_justify="left", box=box.SIMPLE)
    for col in ("version", "from", "method", "forgot", "steps", "created", "model", ""):
        table.add_column(col, justify="right" if col in ("forgot", "steps") else "left")
    for v in result["versions"]:
        share = v["affected_share"]
        table.add_row(
            f"{v['version']:04d}",
            "" if v["parent"] is None else f"{v['parent']:04d}",
            v["method"],
            str(v["newly_forgotten"]),
            "" if share is None else f"{share:.1%}",
            v["created"] or "",
            (v["model_hash"] or "")[:12],
            f"retired: {v['retired_why']}" if v["retired"] else "",
        )
    out.print(table)
    pending = result["pending_ids"]
    owed = f"; {len(pending)} ids owed by its next request" if pending else ""
    say(f"default --from: {result['default_from']:04d}{owed}")


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


def render_verify(report: dict) -> None:
    table = Table(title=f"verify {report['run']}", title_justify="left", box=box.SIMPLE)
    for col in ("", "what", "found"):
        table.add_column(col)
    for row in report["checks"]:
        table.add_row("ok" if row["ok"] else "FAIL", row["what"], row["detail"])
    out.print(table)


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
    out.print(kv_table("forgotten", rows + evidence_rows(result["evidence"])))


def render_covariance(summary: dict) -> None:
    out.print(
        kv_table(
            f"layer covariances of {summary['run']}",
            [
                ("stored at", summary["path"]),
                ("measured on version", summary["version"]),
                (
                    "training samples",
                    f"{summary['samples']:,} (forgotten left out: {summary['excluded']:,})",
                ),
                ("singular vectors", summary["dtype"]),
                ("size on disk", human_bytes(summary["bytes"])),
                ("wall time", f"{summary['seconds']:.1f} s"),
            ],
        )
    )
    table = Table(box=box.SIMPLE, title="directions per layer", title_justify="left")
    for col in ("layer", "input dim", "kept at γ 0.95"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for layer in summary["layers"]:
        table.add_row(layer["name"], f"{layer['dim']:,}", f"{layer['kept_at_0.95']:,}")
    out.print(table)


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
            f"{layer['kept_per_step']:,}",
            human_bytes(layer["index_bytes"]),
            human_bytes(layer["value_bytes"]),
            f"{layer['bits_per_entry']:.1f}",
            f"1/{layer['dense_fp32_bytes'] / size:.1f}" if size else "-",
            f"{size / layer['information_bound_bytes']:.2f}"
            if layer["information_bound_bytes"]
            else "-",
        )
    out.print(table)
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
    for key, label, good, show in ROWS + (LIRA_ROWS if result.get("lira") else []):
        cells = [show(models[c].get(key)) for c in columns]
        if gap is not None:
            cells.append(show(gap.get(key)) if key in gap else "")
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
