"""Which entries of each trainable tensor a step record keeps: schedules and the row layout.

Tensor l keeps about k_l = max(1, ceil(keep_l * n_l)) entries of largest |delta|
(`selection.py`). All tensors are laid end to end in `named_parameters()` order; a
recorded index is a position in that flat vector. A row gives tensor l `slots` columns
from its `column`: its kept positions ascending, then (format 3, where the count varies)
unused columns holding the fill values.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.params import Interval, Options, validate_params

SCHEDULES = ("uniform", "depth")
TOLERANCE = 0.25  # a row's count for a carried tensor lies in k * (1 -+ TOLERANCE)
CARRY_MIN_SIZE = 4096  # smaller tensors are selected exactly: a pass over them is cheap
VALUE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class KeepSchedule:
    """`uniform`: every tensor keeps `keep`. `depth`: keep rises linearly with module
    depth from `keep_min` (first layer) to `keep` (output layer). A mapping gives
    per-tensor fractions; tensors it leaves out keep `keep`."""

    kind: str = "uniform"  # "uniform", "depth" or "mapping"
    keep: float = 0.1
    keep_min: float | None = None  # depth only; default keep / 10
    mapping: dict[str, float] | None = None

    def fractions(self, model: nn.Module) -> dict[str, float]:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if self.kind == "uniform":
            return {n: self.keep for n in names}
        if self.kind == "depth":
            modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
            low = self.keep_min if self.keep_min is not None else self.keep / 10
            span = max(1, len(modules) - 1)
            depth = {m: i / span for i, m in enumerate(modules)}
            return {n: low + (self.keep - low) * depth[n.rsplit(".", 1)[0]] for n in names}
        mapping = self.mapping or {}
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise InvalidParameterError(
                f"The keep schedule names tensor '{unknown[0]}', which the model does not have.",
                hint="trainable tensors: " + ", ".join(names),
            )
        return {n: float(mapping.get(n, self.keep)) for n in names}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> KeepSchedule:
        return cls(**d)


def parse_schedule(text: str, keep: float, keep_min: float | None = None) -> KeepSchedule:
    """`uniform`, `depth`, or a JSON file mapping tensor name -> fraction."""
    validate_params("the keep schedule", {"keep": keep}, {"keep": Interval(float, 0, 1, "right")})
    if keep_min is not None:
        validate_params(
            "the depth schedule",
            {"keep_min": keep_min},
            {"keep_min": Interval(float, 0, keep, "right")},
        )
    if text in SCHEDULES:
        if keep >= 1 and keep_min is None:  # --keep 1 means dense, whatever the schedule
            return KeepSchedule(kind="uniform", keep=1.0)
        return KeepSchedule(kind=text, keep=keep, keep_min=keep_min if text == "depth" else None)
    path = Path(text)
    if not path.is_file():
        raise InvalidParameterError(
            f"The keep schedule must be one of {', '.join(SCHEDULES)} or a JSON file. "
            f"Got '{text}' instead.",
            hint='a JSON file maps tensor names to fractions, e.g. {"0.weight": 0.02}',
        )
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"Keep schedule {path} is not valid JSON: {exc}.") from None
    if not isinstance(mapping, dict):
        raise InvalidParameterError(f"Keep schedule {path} must be a JSON object name -> fraction.")
    frac = Interval(float, 0, 1, "right")
    for name, value in mapping.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        validate_params("the keep schedule", {name: value}, {name: frac})
        mapping[name] = value
    return KeepSchedule(kind="mapping", keep=keep, mapping=mapping)


@dataclass(frozen=True)
class LayerLayout:
    name: str
    shape: tuple[int, ...]
    numel: int
    keep: float
    k: int  # entries kept per step
    offset: int  # first position of this tensor in the flat parameter vector
    column: int  # first column of this tensor in a step row
    slots: int = 0  # columns of a row for this tensor (format 3: up to k * 1.25); 0: k
    least: int = 0  # fewest entries a row holds for this tensor; 0: k

    def __post_init__(self) -> None:  # stores before format 3 keep exactly k, in k columns
        if not self.slots:
            object.__setattr__(self, "slots", self.k)
        if not self.least:
            object.__setattr__(self, "least", self.k)

    @property
    def variable(self) -> bool:
        """Whether a row's count for this tensor varies (a threshold selection)."""
        return self.least < self.slots


@dataclass(frozen=True)
class StoreLayout:
    layers: tuple[LayerLayout, ...]
    value_dtype: str

    @property
    def row_width(self) -> int:
        return sum(layer.slots for layer in self.layers)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Each layer's first position in the flat parameter vector."""
        return np.array([layer.offset for layer in self.layers], np.int64)

    @functools.cached_property
    def columns(self) -> np.ndarray:
        """Each layer's first column in a row."""
        return np.array([layer.column for layer in self.layers], np.int64)

    @functools.cached_property
    def runs(self) -> list[tuple[int, int]]:
        """Layers (first, last) whose entries fill consecutive columns of every row: a run
        ends at a layer whose count varies (its unused columns follow) or at the last."""
        runs, first = [], 0
        for i, layer in enumerate(self.layers):
            if layer.variable or i == len(self.layers) - 1:
                runs.append((first, i))
                first = i + 1
        return runs

    @property
    def num_params(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def dense(self) -> bool:
        return all(layer.k == layer.numel for layer in self.layers)

    def to_list(self) -> list[dict]:
        return [{**asdict(layer), "shape": list(layer.shape)} for layer in self.layers]

    @classmethod
    def from_list(cls, layers: list[dict], value_dtype: str) -> StoreLayout:
        return cls(
            tuple(LayerLayout(**{**d, "shape": tuple(d["shape"])}) for d in layers), value_dtype
        )


def kept_count(keep: float, numel: int) -> int:
    return min(numel, max(1, math.ceil(keep * numel)))


def carries(numel: int, k: int, tolerance: float) -> bool:
    """Whether a tensor of `numel` entries keeping about `k` gets a carried threshold."""
    return (
        tolerance > 0
        and numel > CARRY_MIN_SIZE
        and math.floor(k * (1 + tolerance)) > k
        and math.floor(k * (1 + tolerance)) < numel
    )


def make_layout(
    model: nn.Module, schedule: KeepSchedule, value_dtype: str, tolerance: float = TOLERANCE
) -> StoreLayout:
    """Each trainable tensor's k, and its columns: up to k * (1 + tolerance) where the
    threshold selection applies to it (`carries`), else k."""
    validate_params(
        "the update store", {"delta_dtype": value_dtype}, {"delta_dtype": Options(VALUE_DTYPES)}
    )
    fractions = schedule.fractions(model)
    layers, offset, column = [], 0, 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        n = p.numel()
        k = kept_count(fractions[name], n)
        slots, least = k, k
        if carries(n, k, tolerance):
            slots, least = math.floor(k * (1 + tolerance)), math.ceil(k * (1 - tolerance))
        layers.append(
            LayerLayout(name, tuple(p.shape), n, fractions[name], k, offset, column, slots, least)
        )
        offset += n
        column += slots
    return StoreLayout(tuple(layers), value_dtype)
