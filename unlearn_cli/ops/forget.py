"""`unlearn forget`: apply one deletion request to a run and write the next version.

Order of work: everything that can be checked is checked before any file is
written (`forget_request.prepare`; the dataset is read only when the request or the
method needs it, so subtracting recorded updates works after the training data is
gone); then the
method edits a private copy of the model; then one atomic rename commits model,
receipt and ledger together (`Run.write_version`), and the journal gets its
line. A failure or kill at any point leaves every existing version as it was.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import append_journal, journal_entry, journal_versions
from unlearn_cli.methods import ForgetContext, ForgetOutcome, Method
from unlearn_cli.ops.forget_request import ForgetConfig, PreparedRequest, prepare
from unlearn_cli.ops.pruned import (
    forget_pruned,
)
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.training import TrainConfig, resolve_device

__all__ = ["ForgetConfig", "PreparedRequest", "apply", "forget_run", "make_context", "prepare"]

# The README's "Which method when" for a class or samples spread over most batches.
SUITED_FOR_HEAVY = (
    "optimize -p partial=true or label-flip -p partial=true (retrain for exact removal)"
)


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
    total = recorded_steps(prep)
    return {
        "noop": True,
        "version": prep.version,
        "created": None,
        **receipt_header(prep, prep.config.seed),
        "ids": {
            "requested": int(prep.ids.size),
            "newly_forgotten": [],
            "already_forgotten": prep.already.tolist(),
            "pending_included": prep.pending.tolist(),
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
    total = recorded_steps(prep)
    return {
        **receipt_header(prep, ctx.seed),
        "ids": {
            "requested": int(prep.ids.size),
            "newly_forgotten": ctx.forget_ids.tolist(),
            "already_forgotten": prep.already.tolist(),
            "pending_included": prep.pending.tolist(),
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


def recorded_steps(prep: PreparedRequest) -> int:
    """The steps of the run's training: the store's committed rows, or run.json's count."""
    store = prep.store
    return int(store.info().committed_steps if store is not None else prep.run.meta["steps"])


def receipt_header(prep: PreparedRequest, seed: int | None) -> dict[str, Any]:
    """What a forget document says about the request and the method, done or not."""
    unprune = prep.config.unprune
    return {
        "kind": "forget",
        "parent": prep.version,
        "method": prep.method.name,
        "auto": prep.choice,
        "params": asdict(prep.params),
        "unprune": None if unprune is None else asdict(unprune),
        "seed": seed,
        "request": {**prep.request.describe(prep.run.samples()), "class_indices": prep.classes},
    }


def heavy_warning(method: Method, receipt: dict) -> str | None:
    share = receipt["steps"]["affected_share"]
    if share is None or method.share_limit is None or share <= method.share_limit:
        return None
    return (
        f"{share:.0%} of all training steps held a requested sample: subtracting that many "
        f"updates removes much of what the model learned. Better suited: {SUITED_FOR_HEAVY}."
    )
