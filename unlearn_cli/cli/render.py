"""How the results of the smaller commands are shown as tables (forget's and eval's sit
beside their commands); the demo reuses them."""

from __future__ import annotations

from rich import box
from rich.table import Table

from unlearn_cli.cli.console import human_bytes, kv_table, out, say


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
    for col in ("version", "from", "method", "forgot", "steps", "evidence", "created", "model", ""):
        table.add_column(col, justify="right" if col in ("forgot", "steps") else "left")
    for v in result["versions"]:
        share = v["affected_share"]
        table.add_row(
            f"{v['version']:04d}",
            "" if v["parent"] is None else f"{v['parent']:04d}",
            v["method"],
            str(v["newly_forgotten"]),
            "" if share is None else f"{share:.1%}",
            v["evidence"] or "",
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
