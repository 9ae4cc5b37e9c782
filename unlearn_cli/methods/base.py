"""The method registry, and what every method receives and returns.

A method is one small file: a frozen params dataclass (constraints declared as
data, like `TrainConfig`) and a function `forget(ctx, params) -> ForgetOutcome`
that edits `ctx.model` in place. No method owns a training loop: they call
`training.fit` with a loss or a gradient hook.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.params import validate_dataclass
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.registry import Registry
from unlearn_cli.store import UpdateStore
from unlearn_cli.store.covariance import CovarianceState
from unlearn_cli.training import TrainConfig


def param(default: Any, help: str) -> Any:
    """A method parameter: its default and the one line `unlearn list methods` shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class ForgetContext:
    """Everything a method may use. `model` is a private copy: edit it in place.

    The dataset is loaded on first use of `data`, so methods that only subtract
    recorded updates work when the training data is no longer at hand.
    """

    model: nn.Module
    load_data: Callable[[], Dataset]
    n_train: int
    config: TrainConfig  # the run's training config (optimizer, lr, batch size, seed)
    forget_ids: np.ndarray  # ids this request forgets (not forgotten before), sorted
    forgotten_ids: np.ndarray  # every id forgotten once this request is applied, sorted
    subtracted_steps: np.ndarray  # steps subtracted by earlier requests, sorted
    affected_steps: np.ndarray  # steps whose batch held a forget id, sorted (empty: no store)
    store: UpdateStore | None
    init_state: dict[str, torch.Tensor]  # theta_0
    seed: int
    progress: Progress = field(default_factory=NullProgress)
    # The layer-input covariances this version uses (pgu); raises when the run has none.
    load_covariance: Callable[[], CovarianceState] | None = None

    @functools.cached_property
    def data(self) -> Dataset:
        return self.load_data()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def retain_ids(self) -> torch.Tensor:
        """Training ids never forgotten, ascending."""
        keep = np.ones(self.n_train, dtype=bool)
        keep[self.forgotten_ids] = False
        return torch.from_numpy(np.flatnonzero(keep))


@dataclass
class ForgetOutcome:
    """What a method reports besides the edited model (all of it goes into the receipt)."""

    subtracted_steps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    bytes_read: int = 0
    details: dict = field(default_factory=dict)
    # Files the new version holds besides the model: name -> writer(path inside the version)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    params: type  # a frozen dataclass with a `constraints` ClassVar
    forget: Callable[[ForgetContext, Any], ForgetOutcome]
    summary: str
    uses_store: bool = False  # subtracts recorded updates (needs the update store)
    needs_data: bool = False  # reads training samples (forget or retained): load them first
    # False when the result no longer contains the recorded trajectory (retrain from
    # scratch): later requests cannot subtract recorded updates from it.
    keeps_trajectory: bool = True
    uses_covariance: bool = False  # projects against the stored layer covariances (pgu)

    def parse_params(self, pairs: list[str]) -> Any:
        """Typed, validated params from `key=value` strings (the CLI's `-p`)."""
        fields = {f.name: f for f in dataclasses.fields(self.params)}
        hints = typing.get_type_hints(self.params)
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise InvalidParameterError(
                    f"Method parameters are written key=value. Got '{pair}' instead.",
                    hint=f"e.g. -p {next(iter(fields), 'key')}=...",
                )
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                suggestion = f" Did you mean '{close[0]}'?" if close else ""
                raise InvalidParameterError(
                    f"Method {self.name} has no parameter '{key}'.{suggestion}",
                    hint="its parameters: "
                    + (", ".join(fields) or "none")
                    + " (see `unlearn list methods`)",
                )
            values[key] = _convert(self.name, key, text.strip(), hints[key])
        params = self.params(**values)
        validate_dataclass(self.name, params)
        return params

    def describe_params(self) -> list[dict]:
        hints = typing.get_type_hints(self.params)
        constraints = getattr(self.params, "constraints", {})
        rows = []
        own = self.params.__dict__.get("__annotations__", {})
        # the method's own parameters first, then those of shared mixins (partial, stop)
        ordered = sorted(dataclasses.fields(self.params), key=lambda f: f.name not in own)
        for f in ordered:
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


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    METHODS.register(method.name, method.summary)(method)
    return method


# -- typed parameter parsing -----------------------------------------------------
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


def _convert(method: str, key: str, text: str, hint: Any) -> Any:
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
    expected = " or ".join(
        ("a bool (true/false)" if k is bool else f"{_article(k)}") for k in kinds
    )
    raise InvalidParameterError(
        f"The '{key}' parameter of {method} must be {expected}. Got {text!r} instead."
    )


def _article(kind: type) -> str:
    return {int: "an int", float: "a float", str: "a string"}.get(kind, kind.__name__)
