"""Parameter constraints declared as data and checked once at the boundary.

Messages follow scikit-learn's shape: "The 'keep' parameter of partial-amnesiac
must be a float in the range (0, 1]. Got 1.5 instead."
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


def param(default: Any, help: str) -> Any:
    """A declared parameter: its default and the one line `unlearn list methods` shows."""
    return field(default=default, metadata={"help": help})


def build_params(owner: str, cls: type, values: Any = None) -> Any:
    """A validated instance of the params dataclass `cls` from an instance, a mapping of
    its fields, or None (the defaults). Unknown names are refused with a suggestion."""
    if values is None:
        values = {}
    if isinstance(values, cls):
        obj = values
    elif isinstance(values, Mapping):
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise _unknown(owner, key, names)
        obj = cls(**values)
    else:
        raise InvalidParameterError(
            f"The parameters of {owner} must be a {cls.__name__} or a mapping of its fields. "
            f"Got {type(values).__name__} instead."
        )
    validate_dataclass(owner, obj)
    return obj


def parse_pairs(owner: str, cls: type, pairs: Sequence[str]) -> dict[str, Any]:
    """Typed values from `key=value` strings (the CLI's `-p`), by `cls`'s type hints."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InvalidParameterError(
                f"Parameters are written key=value. Got '{pair}' instead.",
                hint=f"e.g. -p {names[0] if names else 'key'}=...",
            )
        if key not in names:
            raise _unknown(owner, key, names)
        values[key] = _convert(owner, key, text.strip(), hints[key])
    return values


def describe_params(cls: type) -> list[dict]:
    """Name, type, default, allowed values and help of each field (own fields first)."""
    hints = typing.get_type_hints(cls)
    constraints = getattr(cls, "constraints", {})
    own = cls.__dict__.get("__annotations__", {})
    rows = []
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        c = constraints.get(f.name)
        options = c if isinstance(c, (list, tuple)) else [c]
        allowed = " or ".join(o.describe() for o in options if o is not None)
        rows.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": f.default,
                "allowed": allowed or None,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def _unknown(owner: str, key: str, names: list[str]) -> InvalidParameterError:
    close = difflib.get_close_matches(key, names, n=1)
    suggestion = f" Did you mean '{close[0]}'?" if close else ""
    return InvalidParameterError(
        f"{owner} has no parameter '{key}'.{suggestion}",
        hint="its parameters: " + (", ".join(names) or "none") + " (see `unlearn list methods`)",
    )


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _base_types(hint: Any) -> tuple[list[type], bool]:
    """(the non-None types of a hint, whether None is allowed)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = list(typing.get_args(hint))
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _type_name(hint: Any) -> str:
    kinds, optional = _base_types(hint)
    name = "|".join(k.__name__ for k in kinds)
    return f"{name}|None" if optional else name


def _convert(owner: str, key: str, text: str, hint: Any) -> Any:
    kinds, optional = _base_types(hint)
    if optional and text.lower() in ("none", "null", ""):
        return None
    for kind in kinds:
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            continue
        try:
            return kind(text)
        except ValueError:
            continue
    expected = " or ".join("a bool (true/false)" if k is bool else _article(k) for k in kinds)
    raise InvalidParameterError(
        f"The '{key}' parameter of {owner} must be {expected}. Got {text!r} instead."
    )


def _article(kind: type) -> str:
    return {int: "an int", float: "a float", str: "a string"}.get(kind, kind.__name__)
