"""`unlearn verify RUN`: check every file of a run; exit 1 when anything is damaged."""

from __future__ import annotations

from rich import box
from rich.table import Table

from unlearn_cli.cli.console import out, show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.errors import RunError
from unlearn_cli.ops.verify import verify_run


def verify(run: RunArg, json_out: JsonOpt = False) -> None:
    """Check a run read-only: model hashes, every store chunk's checksum and rows, the
    sample index, ledgers, masks, covariances and the journal."""
    report = verify_run(run)
    show(report, json_out, render_verify)
    if not report["ok"]:
        first = next(r for r in report["checks"] if not r["ok"])
        raise RunError(
            f"verify found {report['problems']} problem(s) in {run}; first: "
            f"{first['what']}: {first['detail']}",
            hint="restore the damaged files from a backup, or retrain",
        )


def render_verify(report: dict) -> None:
    table = Table(title=f"verify {report['run']}", title_justify="left", box=box.SIMPLE)
    for col in ("", "what", "found"):
        table.add_column(col)
    for row in report["checks"]:
        table.add_row("ok" if row["ok"] else "FAIL", row["what"], row["detail"])
    out.print(table)
