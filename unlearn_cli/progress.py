"""A progress sink the core reports to; the CLI plugs in a Rich progress bar."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, description: str, epochs: int | None = None) -> None: ...

    def advance(self, n: int, metrics: dict) -> None: ...

    def stop(self) -> None: ...


class NullProgress:
    def start(self, total: int, description: str, epochs: int | None = None) -> None:
        pass

    def advance(self, n: int, metrics: dict) -> None:
        pass

    def stop(self) -> None:
        pass
