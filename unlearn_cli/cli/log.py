"""`unlearn log RUN`: the versions of a run, newest last, with retired ones marked."""

from __future__ import annotations

from rich import box
from rich.table import Table

from unlearn_cli.cli.console import out, say, show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.ops.log import run_log


def log(run: RunArg, json_out: JsonOpt = False) -> None:
    """List every version: parent, method, request, affected share, time, model hash;
    retired versions and the ids still owed by the next request."""
    result = run_log(run)
    show(result, json_out, render_log)


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
