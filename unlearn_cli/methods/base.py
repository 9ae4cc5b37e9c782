"""The method registry, and what every method receives and returns.

A method is one small file: a frozen params dataclass (constraints declared as
data, like `TrainConfig`) and a function `forget(ctx, params) -> ForgetOutcome`
that edits `ctx.model` in place. No method owns a training loop: they call
`training.train_epochs` (through `support.train_on`) with hooks. A method that
needs a resource of its own (pgu's covariances) checks it in `check`, before
any work, and loads it from `ctx.run` itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.ledger import retained_ids
from unlearn_cli.params import build_params, describe_params, param, parse_pairs
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.registry import Registry
from unlearn_cli.store import UpdateStore
from unlearn_cli.train_config import TrainConfig, class_weights
from unlearn_cli.training import steps_per_epoch

if TYPE_CHECKING:
    from unlearn_cli.rundir import Run
    from unlearn_cli.shadows import ShadowEvidence

__all__ = [
    "METHODS",
    "Cost",
    "PlanFacts",
    "ForgetContext",
    "ForgetOutcome",
    "Method",
    "RequestFacts",
    "Rung",
    "param",
    "register",
]


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
    seed: int
    run: Run
    version: int  # the version the request starts from
    progress: Progress = field(default_factory=NullProgress)
    # Steps an earlier `replay` re-ran: step -> the version holding their current record.
    replayed: dict[int, int] = field(default_factory=dict)
    # The run's shadows, judging the forget set sample by sample (None: the run has none);
    # the stopping rule of sample requests stops on it (`stopping.py`).
    evidence: ShadowEvidence | None = None

    @functools.cached_property
    def data(self) -> Dataset:
        return self.load_data()

    @functools.cached_property
    def init_state(self) -> dict[str, torch.Tensor]:
        """theta_0, read on first use: only `retrain` and un-pruning need it (a remote
        run's init file is fetched only then)."""
        return self.run.load_state(None)

    @functools.cached_property
    def class_weights(self) -> torch.Tensor | None:
        """The run's loss weights per class (None: plain cross-entropy)."""
        return class_weights(self.config, self.data.y_train, self.data.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def retain_ids(self) -> torch.Tensor:
        """Training ids never forgotten, ascending."""
        return retained_ids(self.n_train, self.forgotten_ids)


@dataclass
class ForgetOutcome:
    """What a method reports besides the edited model (all of it goes into the receipt)."""

    subtracted_steps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    # Steps this version re-ran and re-recorded (`replay.zarr` in the version): later
    # requests subtract that record instead of the original one.
    replayed_steps: np.ndarray | None = None
    bytes_read: int = 0
    details: dict = field(default_factory=dict)
    # Files the new version holds besides the model: name -> writer(path inside the version)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestFacts:
    """What a delegating method (`auto`) decides from, known before any work."""

    affected_share: float | None  # share of recorded steps the request touches (None: no store)
    store_usable: bool  # a recorded trajectory this version still contains
    data_available: bool  # the training data loads
    whole_class: bool  # it takes every training sample of its classes (--class, or ids)
    # The share of the request's samples the per-example evidence flags in the version it
    # starts from (None: no evidence, the run has no shadows), and whether that is more
    # than chance explains.
    flagged_share: float | None = None
    flagged_beyond_chance: bool = False


@dataclass(frozen=True)
class PlanFacts:
    """What `forget --dry-run` knows of a request, for each method's `estimate`."""

    store: UpdateStore | None
    steps: np.ndarray  # affected steps whose record is still in the model
    forgotten: np.ndarray  # every id forgotten once the request is applied
    n_forget: int  # the request's new ids
    n_retain: int  # training samples retained after it
    config: TrainConfig  # the run's

    def passes(self, epochs: int, n: int, batch_size: int | None = None) -> Cost:
        """`epochs` passes over `n` samples at `batch_size` (default: the run's)."""
        if epochs == 0 or n == 0:
            return Cost()
        steps = epochs * steps_per_epoch(n, batch_size or self.config.batch_size)
        return Cost(steps, epochs * n)


@dataclass(frozen=True)
class Cost:
    """The training a method would run (upper bounds where a rule may stop it early)."""

    training_steps: int = 0
    training_samples: int = 0


@dataclass(frozen=True)
class Rung:
    """One method a delegating method would run, with its parameters and why; `auto`
    gives a ladder of them, climbed while a result changes nothing or stays flagged."""

    method: str
    params: dict
    why: str


@dataclass(frozen=True)
class Method:
    name: str
    params: type  # a frozen dataclass with a `constraints` ClassVar
    forget: Callable[[ForgetContext, Any], ForgetOutcome]
    summary: str
    uses_store: bool = False  # subtracts recorded updates (needs the update store)
    needs_data: bool = False  # reads training samples (forget or retained): load them first
    # True when the result is rebuilt from θ0 without the recorded trajectory (retrain):
    # later requests cannot subtract recorded updates from it, and on a pruned version
    # it prunes again from scratch rather than keeping the mask.
    from_scratch: bool = False
    # Checks that need the run (resources, layer names) before any work: (run, version,
    # params, a model of the run's architecture) -> None, raising an UnlearnError.
    check: Callable[[Run, int, Any, nn.Module], None] | None = None
    # A method that picks others before any work: (params, facts) -> the methods to try,
    # in order (`Rung`s). The first runs with its own checks and flags; the next ones run
    # only while a result changes nothing or the evidence still flags the forget set.
    delegate: Callable[[Any, RequestFacts], list[Rung]] | None = None
    # The share of recorded steps a request may touch before this method damages the model
    # (subtracting that many updates removes much of what it learned); None: no such share.
    share_limit: float | None = None
    # What it would train for a request, with its parameters (`forget --dry-run`); None:
    # it trains nothing (what it reads of the store follows from `uses_store`).
    estimate: Callable[[PlanFacts, Any], Cost] | None = None

    def make_params(self, values: Any = None) -> Any:
        """Validated params from an instance, a mapping of fields, or None (defaults)."""
        return build_params(self.name, self.params, values)

    def parse_params(self, pairs: list[str]) -> Any:
        """Typed, validated params from `key=value` strings (the CLI's `-p`)."""
        return self.make_params(parse_pairs(self.name, self.params, pairs))

    def describe_params(self) -> list[dict]:
        return describe_params(self.params)


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    METHODS.register(method.name, method.summary)(method)
    return method
