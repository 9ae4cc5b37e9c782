"""One registry pattern for models, datasets and methods.

Names are explicit strings; an unknown name lists the valid ones and suggests
the closest, e.g. ``Unknown model 'lenett'. Did you mean 'lenet'?``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from unlearn_cli.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """A named collection of factories; `register` is a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            doc_lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            text = summary or (doc_lines[0] if doc_lines else "")
            self._entries[name] = Entry(name, obj, text)
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            raise self.unknown(name) from None

    def unknown(self, name: str) -> UnknownNameError:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        suggestion = f" Did you mean '{close[0]}'?" if close else ""
        return UnknownNameError(
            f"Unknown {self.kind} '{name}'.{suggestion}",
            hint=f"valid {self.kind}s: {', '.join(self.names())} (see `unlearn list`)",
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        for name in self.names():
            yield self._entries[name]
