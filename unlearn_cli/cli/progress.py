"""Progress reporters for long work: a Rich bar on a terminal, plain lines in logs.

`--progress auto` (the default) shows the bar when stderr is a terminal and plain
timestamped lines otherwise (CI logs, `2> file`), at most one every 10% of the work or
every 30 s: step/total, epoch (counted from 1), loss, elapsed time and ETA. `--quiet`
or `--progress none` shows none; warnings are printed either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from unlearn_cli.cli.console import err, flags
from unlearn_cli.progress import NullProgress
from unlearn_cli.progress import Progress as ProgressSink

MODES = ("auto", "bar", "log", "none")


def progress() -> ProgressSink:
    """The reporter the flags ask for."""
    mode = "none" if flags.quiet else flags.progress
    if mode == "auto":
        mode = "bar" if err.is_terminal else "log"
    if mode == "bar":
        return RichProgress()
    if mode == "log":
        return LogProgress()
    return NullProgress()


def describe(metrics: dict, epochs: int | None) -> str:
    parts = []
    if epochs is not None and "epoch" in metrics:
        parts.append(f"epoch {int(metrics['epoch']) + 1}/{epochs}")
    for key in ("loss", "acc"):
        if isinstance(metrics.get(key), float):
            parts.append(f"{key} {metrics[key]:.4f}")
    return ", ".join(parts)


class RichProgress:
    """A Rich bar on stderr: description, bar, done/total, epoch, loss, rate, elapsed, ETA."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task = TaskID(0)
        self._epochs: int | None = None
        self._started, self._done = 0.0, 0

    def start(self, total: int, description: str, epochs: int | None = None) -> None:
        self._epochs = epochs
        self._started, self._done = time.monotonic(), 0
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int, metrics: dict) -> None:
        if self._bar is not None:
            self._done += n
            rate = self._done / max(1e-9, time.monotonic() - self._started)
            text = ", ".join(filter(None, [describe(metrics, self._epochs), f"{rate:.1f} steps/s"]))
            self._bar.update(self._task, advance=n, metrics=text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class LogProgress:
    """Plain timestamped lines on stderr, at most one per `share` of the work or `seconds`."""

    def __init__(
        self,
        share: float = 0.1,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.share, self.seconds, self.clock = share, seconds, clock
        self.write = write or (lambda line: err.print(line, markup=False, highlight=False))
        self.total, self.done, self.description = 0, 0, ""
        self.epochs: int | None = None
        self.started = self.last = 0.0
        self.metrics: dict = {}

    def start(self, total: int, description: str, epochs: int | None = None) -> None:
        self.total, self.done, self.description, self.epochs = total, 0, description, epochs
        self.started = self.last = self.clock()
        self.next_mark = self.share
        self._line(f"started, {total} steps")

    def advance(self, n: int, metrics: dict) -> None:
        self.done += n
        self.metrics = metrics
        now = self.clock()
        fraction = self.done / self.total if self.total else 1.0
        if fraction + 1e-9 >= self.next_mark or now - self.last >= self.seconds:
            while self.next_mark <= fraction + 1e-9:
                self.next_mark += self.share
            self.last = now
            elapsed = now - self.started
            eta = elapsed / fraction - elapsed if fraction > 0 else float("nan")
            state = describe(metrics, self.epochs)
            self._line(
                f"step {self.done}/{self.total} ({fraction:.0%})"
                + (f", {state}" if state else "")
                + f", {elapsed:.0f} s elapsed, ETA {eta:.0f} s"
            )

    def stop(self) -> None:
        self._line(f"done, {self.done} steps in {self.clock() - self.started:.1f} s")

    def _line(self, text: str) -> None:
        self.write(f"{time.strftime('%H:%M:%S')} {self.description}: {text}")
