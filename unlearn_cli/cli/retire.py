"""`unlearn retire RUN N --why TEXT`: set a bad version aside without losing an erasure."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_cli.cli.console import kv_table, out, show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.ops.retire import retire_run


def retire(
    run: RunArg,
    version: Annotated[int, typer.Argument(help="The version to retire (with its descendants).")],
    why: Annotated[str, typer.Option("--why", help="What was wrong with it (kept for audit).")],
    json_out: JsonOpt = False,
) -> None:
    """Retire a version and its descendants: kept on disk, no longer the default --from; the
    ids they forgot stay owed and the next request from a live version removes them too."""
    show(retire_run(run, version, why), json_out, render_retire)


def render_retire(result: dict) -> None:
    pending = result["pending_ids"]
    out.print(
        kv_table(
            "retired",
            [
                ("versions", ", ".join(f"{v:04d}" for v in result["retired"])),
                ("why", result["why"]),
                ("default --from now", f"{result['default_from']:04d}"),
                ("ids owed by the next request", f"{len(pending)}" if pending else "none"),
            ],
        )
    )
