"""Consoles, global flags, the Rich progress bar and small rendering helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class Flags:
    debug: bool = False
    quiet: bool = False


flags = Flags()


def emit_json(obj: Any) -> None:
    """Machine-readable output: stdout carries only this JSON document."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human line on stderr, unless --quiet."""
    if not flags.quiet:
        err.print(message)


class RichProgress:
    """Implements `unlearn_cli.progress.Progress` with a Rich bar on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and not flags.quiet and err.is_terminal
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def start(self, total: int, description: str) -> None:
        if not self.enabled:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int, metrics: dict) -> None:
        if self._bar is None:
            return
        text = " ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
        )
        self._bar.update(self._task, advance=n, metrics=text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


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
