"""`unlearn list models|datasets|methods`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from unlearn_cli.cli.console import out, show
from unlearn_cli.data import DATASETS
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.models import MODELS

KINDS = ("models", "datasets", "methods")


def _rows(kind: str) -> list[dict]:
    if kind == "models":
        return [{"name": e.name, "summary": e.summary} for e in MODELS.entries()]
    if kind == "datasets":
        return [{"name": e.name, "summary": e.summary} for e in DATASETS.entries()]
    from unlearn_cli.methods import METHODS

    return [
        {"name": e.name, "summary": e.summary, "params": e.obj.describe_params()}
        for e in METHODS.entries()
    ]


def list_things(
    kind: Annotated[str, typer.Argument(help="models, datasets or methods.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the registered models, datasets or unlearning methods."""
    if kind not in KINDS:
        raise InvalidParameterError(
            f"The 'kind' argument of list must be one of {', '.join(KINDS)}. Got '{kind}' instead."
        )
    show(_rows(kind), json_out, lambda rows: render_list(kind, rows))


def render_list(kind: str, rows: list[dict]) -> None:
    table = Table(title=kind, title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    if kind == "methods":
        table.add_column("parameters (default)")
    for row in rows:
        cells = [row["name"], row["summary"]]
        if kind == "methods":
            cells.append(", ".join(f"{p['name']}={p['default']}" for p in row["params"]))
        table.add_row(*cells)
    out.print(table)
