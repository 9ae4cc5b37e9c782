"""`unlearn log RUN`: the versions of a run, newest last, with retired ones marked."""

from __future__ import annotations

from unlearn_cli.cli.console import show
from unlearn_cli.cli.options import JsonOpt, RunArg
from unlearn_cli.cli.render import render_log
from unlearn_cli.ops.log import run_log


def log(run: RunArg, json_out: JsonOpt = False) -> None:
    """List every version: parent, method, request, affected share, time, model hash;
    retired versions and the ids still owed by the next request."""
    result = run_log(run)
    show(result, json_out, render_log)
