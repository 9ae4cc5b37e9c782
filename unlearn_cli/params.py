"""Parameter constraints declared as data and checked once at the boundary.

Messages follow scikit-learn's shape: "The 'keep' parameter of partial-amnesiac
must be a float in the range (0, 1]. Got 1.5 instead."
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unlearn_cli.errors import InvalidParameterError


@dataclass(frozen=True)
class Interval:
    """A numeric range; `kind` is int or float; bounds may be None (unbounded)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        lo_ok = self.low is None or (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        hi_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return lo_ok and hi_ok

    def describe(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else _fmt(self.low)
        high = "inf" if self.high is None else _fmt(self.high)
        name = "an int" if self.kind is int else "a float"
        return f"{name} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: Sequence[Any]

    def accepts(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class IsInstance:
    kind: type
    text: str

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind) and not (
            self.kind in (int, float) and isinstance(value, bool)
        )

    def describe(self) -> str:
        return self.text


Constraint = Interval | Options | IsInstance


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def validate_params(owner: str, values: Mapping[str, Any], constraints: Mapping[str, Any]) -> None:
    """Raise `InvalidParameterError` for the first value outside its constraints.

    `constraints` maps a parameter name to a constraint or a list of them (any
    may accept the value); `None` in the list accepts `None`.
    """
    for name, value in values.items():
        allowed = constraints.get(name)
        if allowed is None:
            continue
        options = allowed if isinstance(allowed, (list, tuple)) else [allowed]
        if value is None and None in options:
            continue
        real = [c for c in options if c is not None]
        if any(c.accepts(value) for c in real):
            continue
        what = " or ".join(c.describe() for c in real)
        if None in options:
            what += " or None"
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be {what}. Got {value!r} instead."
        )


def validate_dataclass(owner: str, obj: Any) -> None:
    """Check a (frozen) dataclass instance against its class's `constraints`."""
    constraints = getattr(type(obj), "constraints", {})
    validate_params(owner, dataclasses.asdict(obj), constraints)
