"""Consoles, global flags and small rendering helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class Flags:
    debug: bool = False
    quiet: bool = False
    progress: str = "auto"  # auto, bar, log or none
    argv: tuple[str, ...] = ()  # the command line, for `train --nproc-per-node` to relaunch


flags = Flags()


def emit_json(obj: Any) -> None:
    """Machine-readable output: stdout carries only this JSON document."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def show(document: Any, json_out: bool, render: Callable[[Any], None]) -> None:
    """How every command ends: its JSON document on stdout, or its tables; then the
    document's warnings on stderr (shown even with --quiet)."""
    if json_out:
        emit_json(document)
    else:
        render(document)
    warnings = document.get("warnings", []) if isinstance(document, dict) else []
    for warning in warnings:
        warn(warning)


def say(message: str) -> None:
    """A human line on stderr (a note), unless --quiet."""
    if not flags.quiet:
        err.print(message)


def warn(message: str) -> None:
    """A warning on stderr: shown even with --quiet (it may mean the result needs a look)."""
    err.print(f"[yellow]warning:[/] {message}")


GATE_EXIT = 3  # a gate (`eval`'s, or `--max-residual`) failed


def fail_gates(result: dict) -> None:
    """One stderr line per failed gate, then exit 3 (the document was printed already)."""
    import typer

    failed = [g for g in result["gates"] if not g["passed"]]
    for g in failed:
        value = g["value"]
        shown = "n/a" if value is None else f"{value:.4g}"
        err.print(
            f"gate failed: --{g['gate'].replace('_', '-')} {g['limit']:g}: "
            f"{g['metric']} is {shown}",
            markup=False,
        )
    if failed:
        raise typer.Exit(GATE_EXIT)


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, fmt(value))
    return table


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
