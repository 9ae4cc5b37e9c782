"""`unlearn forget`: apply one deletion request to a run and write the next version.

Order of work: everything that can be checked is checked before any file is
written (the dataset is read only when the request or the method needs it, so
subtracting recorded updates works after the training data is gone); then the
method edits a private copy of the model; then one atomic rename commits model,
receipt and ledger together (`Run.write_version`), and the journal gets its
line. A failure or kill at any point leaves every existing version as it was.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_cli.data import Dataset
from unlearn_cli.errors import DataNotFoundError, RequestError
from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import LedgerState, append_journal, journal_entry, journal_versions
from unlearn_cli.ledger import ledger_state as read_ledger
from unlearn_cli.methods import METHODS, ForgetContext, ForgetOutcome, Method, RequestFacts
from unlearn_cli.methods.support import require_store
from unlearn_cli.ops.pruned import (
    PrunedState,
    UnpruneParams,
    check_pruned_request,
    forget_pruned,
    pruned_state,
)
from unlearn_cli.params import validate_dataclass
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store import UpdateStore
from unlearn_cli.training import TrainConfig, resolve_device

# The README's "Which method when" for a class or samples spread over most batches.
SUITED_FOR_HEAVY = (
    "optimize -p partial=true or label-flip -p partial=true (retrain for exact removal)"
)


@dataclass(frozen=True)
class ForgetConfig:
    """How to apply a request: the method and its typed parameters, and where to start.

    `params` is the method's params dataclass, a mapping of its fields (typed
    values, e.g. {"epochs": 1}), or None for its defaults. `unprune` re-grows and
    re-prunes the mask of a pruned version (Xiao et al. 2025).
    """

    method: str
    params: Any = None
    unprune: UnpruneParams | None = None
    from_version: int | None = None
    seed: int | None = None
    device: str = "cpu"
    # Stop before any work when the request touches more than this share of the recorded
    # steps; with `guard`, a method's own `share_limit` applies when this is None.
    max_affected_share: float | None = None
    guard: bool = False


@dataclass(frozen=True)
class PreparedRequest:
    """A request checked against its run, data and ledger; nothing written yet."""

    run: Run
    version: int  # the version the request starts from
    ledger: LedgerState  # as of `version`
    store: UpdateStore | None
    load_data: Callable[[], Dataset]  # cached: the dataset is read at most once
    method: Method
    params: Any
    config: ForgetConfig
    request: ForgetRequest
    ids: np.ndarray  # every requested id, sorted unique
    classes: list[int]
    pruned: PrunedState | None  # the version's pruning masks, if it is sparse
    choice: dict | None = None  # what `auto` chose and why

    @property
    def new_ids(self) -> np.ndarray:
        return np.setdiff1d(self.ids, self.ledger.forgotten_ids, assume_unique=True)

    @property
    def already(self) -> np.ndarray:
        return np.intersect1d(self.ids, self.ledger.forgotten_ids, assume_unique=True)


def prepare(
    run_path: Path,
    config: ForgetConfig,
    request: ForgetRequest,
    data_root: Path | None = None,
    download: bool = False,
) -> PreparedRequest:
    """Every check, cheapest first: method and params, run, version, store, then data.
    A delegating method (`auto`) is replaced by its choice before the method checks."""
    method = METHODS.get(config.method)
    params = method.make_params(config.params)
    if config.unprune is not None:
        validate_dataclass("--unprune", config.unprune)
    resolve_device(config.device)
    request.check_given()
    run = Run.open(run_path)
    version = run.resolve_version(config.from_version)
    ledger = read_ledger(run.version_dir(version))
    store = run.store()
    load_data = functools.cache(lambda: run.load_dataset(data_root, download))
    choice = None
    if method.delegate is not None:
        ids, classes = request.resolve(run.n_train, load_data)
        facts = request_facts(store, ledger, ids, classes, load_data)
        name, values, why = method.delegate(params, facts)
        choice = {"chosen": name, "params": values, "why": why, "facts": asdict(facts)}
        method = METHODS.get(name)
        params = method.make_params(values)
    pruned = pruned_state(run, version)
    check_method(method, params, config, run, version, ledger, store, pruned)
    check_share(method, config, store, ledger, request, run.n_train, load_data)
    if method.needs_data:
        load_data()  # fail before any work if the data is not at hand
    ids, classes = request.resolve(run.n_train, load_data)
    return PreparedRequest(
        run, version, ledger, store, load_data, method, params, config, request, ids, classes,
        pruned, choice,
    )  # fmt: skip


def check_method(
    method: Method,
    params: Any,
    config: ForgetConfig,
    run: Run,
    version: int,
    ledger: LedgerState,
    store: UpdateStore | None,
    pruned: PrunedState | None,
) -> None:
    """What the method needs from this run and version, checked before any work."""
    check_pruned_request(method, config.unprune, pruned, version)
    if method.uses_store and not ledger.store_applies:
        raise RequestError(
            f"Version {version} was rebuilt without the recorded trajectory (by retrain), "
            f"so {method.name} cannot subtract recorded updates from it.",
            hint="forget from an earlier version with --from, or use --method retrain",
        )
    if method.uses_store:
        require_store(store, method.name)
    if method.check is not None:
        method.check(run, version, params, run.new_model())


def affected_share(store: UpdateStore, ledger: LedgerState, ids: np.ndarray) -> float:
    new = np.setdiff1d(ids, ledger.forgotten_ids)
    return store.steps_touching(new).size / max(1, store.info().committed_steps)


def check_share(
    method: Method,
    config: ForgetConfig,
    store: UpdateStore | None,
    ledger: LedgerState,
    request: ForgetRequest,
    n_train: int,
    load_data: Callable[[], Dataset],
) -> None:
    """Stop before any work when the request touches more steps than the method takes
    without damage, naming what `auto` would choose instead (one table, in `auto`)."""
    limit = config.max_affected_share
    if limit is None and config.guard:
        limit = method.share_limit
    if limit is None or store is None or not ledger.store_applies:
        return
    ids, classes = request.resolve(n_train, load_data)
    share = affected_share(store, ledger, ids)
    if share <= limit:
        return
    auto = METHODS.get("auto")
    facts = request_facts(store, ledger, ids, classes, load_data)
    better, values, why = auto.delegate(auto.make_params(), facts)  # type: ignore[misc]
    better += "".join(f" -p {k}={str(v).lower()}" for k, v in values.items())
    raise RequestError(
        f"{share:.0%} of the recorded steps held a requested sample, over the "
        f"{limit:.0%} that {method.name} takes without damage; nothing was written.",
        hint=f"use -m {better} (what -m auto picks: {why}), or pass --force "
        f"(or --max-affected-share) to run {method.name} anyway",
    )


def request_facts(
    store: UpdateStore | None,
    ledger: LedgerState,
    ids: np.ndarray,
    classes: list[int],
    load_data: Callable[[], Dataset],
) -> RequestFacts:
    usable = store is not None and ledger.store_applies
    share = affected_share(store, ledger, ids) if store is not None and usable else None
    try:
        load_data()
        available = True
    except DataNotFoundError:
        available = False
    return RequestFacts(share, usable, available, bool(classes))


def forget_run(
    run_path: Path,
    config: ForgetConfig,
    request: ForgetRequest,
    *,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Apply `request`; returns the receipt (`noop: true` when there is nothing new)."""
    prep = prepare(run_path, config, request, data_root, download)
    with prep.run.lock():
        sync_journal(prep.run)
        if prep.new_ids.size == 0:
            return noop_document(prep)
        return apply(prep, progress or NullProgress())


def noop_document(prep: PreparedRequest) -> dict[str, Any]:
    """A request with nothing new: no version, and the same top-level keys as any forget."""
    receipt = prep.run.receipt(prep.version)
    digest = receipt.get("model_hash") or receipt.get("model_hash_after")
    store = prep.store
    total = store.info().committed_steps if store is not None else prep.run.meta["steps"]
    unprune = prep.config.unprune
    return {
        "noop": True,
        "version": prep.version,
        "created": None,
        "kind": "forget",
        "parent": prep.version,
        "method": prep.method.name,
        "auto": prep.choice,
        "params": asdict(prep.params),
        "unprune": None if unprune is None else asdict(unprune),
        "seed": prep.config.seed,
        "request": {**prep.request.describe(), "class_indices": prep.classes},
        "ids": {
            "requested": int(prep.ids.size),
            "newly_forgotten": [],
            "already_forgotten": prep.already.tolist(),
        },
        "steps": {
            "total": int(total),
            "affected": 0,
            "affected_share": 0.0,
            "subtracted": [],
            "already_subtracted": 0,
        },
        "bytes_read": 0,
        "wall_seconds": 0.0,
        "data_read": prep.load_data.cache_info().currsize > 0,  # type: ignore[attr-defined]
        "details": {},
        "model_hash": digest,
        "model_hash_before": digest,
        "model_hash_after": digest,
        "warning": None,
        "warnings": [],
    }


def sync_journal(run: Run) -> None:
    """Restore journal lines a kill left out (the version committed, the append did not)."""
    seen = journal_versions(run.path)
    for version in run.versions()[1:]:
        if version not in seen:
            append_journal(run.path, journal_entry(version, run.receipt(version)))


def make_context(prep: PreparedRequest, progress: Progress) -> ForgetContext:
    """What the method receives: a private copy of the model and the request's ids."""
    run, store, new_ids = prep.run, prep.store, prep.new_ids
    config = TrainConfig(**run.meta["config"])
    affected = store.steps_touching(new_ids) if store is not None else np.empty(0, np.int64)
    return ForgetContext(
        model=run.load_model(prep.version).to(resolve_device(prep.config.device)),
        load_data=prep.load_data,
        n_train=run.n_train,
        config=config,
        forget_ids=new_ids,
        forgotten_ids=np.union1d(prep.ledger.forgotten_ids, new_ids),
        subtracted_steps=prep.ledger.subtracted_steps,
        affected_steps=affected,
        store=store,
        init_state=run.load_state(None),
        seed=config.seed if prep.config.seed is None else prep.config.seed,
        run=run,
        version=prep.version,
        progress=progress,
        replayed=dict(prep.ledger.replayed),
    )


def apply(prep: PreparedRequest, progress: Progress) -> dict[str, Any]:
    """Run the method on a private copy of the model and commit the next version."""
    ctx = make_context(prep, progress)
    before = state_hash(ctx.model.state_dict())
    torch.manual_seed(ctx.seed)
    start = time.perf_counter()
    if prep.pruned is None:
        outcome = prep.method.forget(ctx, prep.params)
    else:
        dense = prep.run.load_state(prep.pruned.dense_version)
        outcome = forget_pruned(
            ctx, prep.method, prep.params, prep.pruned, prep.config.unprune, dense
        )
    seconds = time.perf_counter() - start
    replayed = None
    if outcome.replayed_steps is not None:
        replayed = (outcome.replayed_steps, prep.run.next_version())
    new_ledger = prep.ledger.after(
        prep.version,
        ctx.forget_ids,
        outcome.subtracted_steps,
        not prep.method.from_scratch,
        replayed,
    )
    receipt = prep.run.write_version(
        ctx.model,
        forget_receipt(prep, ctx, outcome, seconds),
        ledger=new_ledger,
        hash_before=before,
        files=outcome.files,
    )
    warning = None if outcome.replayed_steps is not None else heavy_warning(prep.method, receipt)
    # `warning` (the first) is kept for scripts written against schema 1 of this document.
    return {"noop": False, **receipt, "warning": warning, "warnings": [warning] if warning else []}


def forget_receipt(
    prep: PreparedRequest, ctx: ForgetContext, outcome: ForgetOutcome, seconds: float
) -> dict[str, Any]:
    store = prep.store
    affected = ctx.affected_steps if store is not None else None
    total = store.info().committed_steps if store is not None else prep.run.meta["steps"]
    unprune = prep.config.unprune
    return {
        "kind": "forget",
        "parent": prep.version,
        "method": prep.method.name,
        "auto": prep.choice,
        "params": asdict(prep.params),
        "unprune": None if unprune is None else asdict(unprune),
        "seed": ctx.seed,
        "request": {**prep.request.describe(), "class_indices": prep.classes},
        "ids": {
            "requested": int(prep.ids.size),
            "newly_forgotten": ctx.forget_ids.tolist(),
            "already_forgotten": prep.already.tolist(),
        },
        "steps": {
            "total": int(total),
            "affected": None if affected is None else int(affected.size),
            "affected_share": None if affected is None else affected.size / max(1, total),
            "subtracted": outcome.subtracted_steps.tolist(),
            "already_subtracted": (
                0
                if affected is None
                else int(np.isin(affected, prep.ledger.subtracted_steps).sum())
            ),
        },
        "bytes_read": outcome.bytes_read,
        "wall_seconds": round(seconds, 4),
        "data_read": prep.load_data.cache_info().currsize > 0,  # type: ignore[attr-defined]
        "details": outcome.details,
    }


def heavy_warning(method: Method, receipt: dict) -> str | None:
    share = receipt["steps"]["affected_share"]
    if share is None or method.share_limit is None or share <= method.share_limit:
        return None
    return (
        f"{share:.0%} of all training steps held a requested sample: subtracting that many "
        f"updates removes much of what the model learned. Better suited: {SUITED_FOR_HEAVY}."
    )
