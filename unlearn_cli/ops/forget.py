"""`unlearn forget`: apply one deletion request to a run and write the next version.

Order of work: everything that can be checked is checked before any file is
written (`forget_request.prepare`; the dataset is read only when the request or the
method needs it, so subtracting recorded updates works after the training data is
gone); then the
method edits a private copy of the model; then one atomic rename commits model,
receipt and ledger together (`Run.write_version`), and the journal gets its
line. A failure or kill at any point leaves every existing version as it was.

`auto` gives a ladder of methods (`methods/auto.py`): each runs on its own copy of the
starting model, and the next runs only while the result changed nothing or the evidence
still flags more of the forget set than chance; the receipt lists every attempt. A
request whose every method left the model as it was writes no version (`noop: true`,
with the reason): its samples were not forgotten.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_cli.devices import resolve_device
from unlearn_cli.errors import UnlearnError
from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import append_journal, journal_entry, journal_versions
from unlearn_cli.methods import METHODS, ForgetContext, Method
from unlearn_cli.methods.support import steps_to_subtract
from unlearn_cli.ops.forget_receipt import (
    Attempt,
    finish,
    forget_receipt,
    heavy_warning,
    noop_document,
)
from unlearn_cli.ops.forget_request import (
    ForgetConfig,
    PreparedRequest,
    check_method,
    prepare,
)
from unlearn_cli.ops.pruned import forget_pruned
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

__all__ = ["ForgetConfig", "PreparedRequest", "apply", "forget_run", "make_context", "prepare"]


def forget_run(
    run_path: Path,
    config: ForgetConfig,
    request: ForgetRequest,
    *,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Apply `request`; returns the receipt (`noop: true` when no version was written)."""
    prep = prepare(run_path, config, request, data_root, download)
    with prep.run.lock():
        sync_journal(prep.run)
        if prep.new_ids.size == 0:
            where = f"version {prep.version}"
            reason = f"all {prep.ids.size} requested ids were already forgotten in {where}"
            return noop_document(prep, reason)
        return apply(prep, progress or NullProgress())


def sync_journal(run: Run) -> None:
    """Restore journal lines a kill left out (the version committed, the append did not)."""
    seen = journal_versions(run.path)
    for version in run.versions()[1:]:
        if version not in seen:
            append_journal(run.path, journal_entry(version, run.receipt(version)))


def make_context(prep: PreparedRequest, progress: Progress) -> ForgetContext:
    """What a method receives: a private copy of the model and the request's ids."""
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
        evidence=None if prep.judged is None else prep.judged.evidence,
    )


def apply(prep: PreparedRequest, progress: Progress) -> dict[str, Any]:
    """Run the method (or climb auto's ladder) and commit the first accepted result."""
    rungs: list[tuple[str, dict | None]] = [(prep.method.name, None)]
    rungs += [(r.method, r.params) for r in prep.ladder]
    attempts: list[dict] = []
    reason, details = "", {}
    for i, (name, values) in enumerate(rungs):
        last = i == len(rungs) - 1
        method = METHODS.get(name)
        try:
            params = prep.params if values is None else method.make_params(values)
            if values is not None:  # a later rung: its own checks, before its work
                check_method(
                    method,
                    params,
                    prep.config,
                    prep.run,
                    prep.version,
                    prep.ledger,
                    prep.store,
                    prep.pruned,
                )
        except UnlearnError as exc:
            attempts.append({"method": name, "skipped": exc.message, "accepted": False})
            continue
        attempt = run_attempt(prep, method, params, progress)
        accepted, verdict = judge_attempt(prep, attempt, last)
        attempts.append(attempt.describe(accepted, verdict))
        if accepted:
            attempt.seconds = sum(a.get("seconds", 0.0) for a in attempts)  # the request's cost
            return commit(prep, attempt, attempts)
        reason = f"{name}: {attempt.unchanged}" if attempt.unchanged else verdict
        details = attempt.outcome.details
    return noop_document(prep, reason or "no method could run", attempts, details)


def run_attempt(prep: PreparedRequest, method: Method, params: Any, progress: Progress) -> Attempt:
    """`method` on a private copy of the starting model, and the evidence on its result."""
    ctx = make_context(prep, progress)
    before = state_hash(ctx.model.state_dict())
    torch.manual_seed(ctx.seed)
    start = time.perf_counter()
    if prep.pruned is None:
        outcome = method.forget(ctx, params)
    else:
        dense = prep.run.load_state(prep.pruned.dense_version)
        outcome = forget_pruned(ctx, method, params, prep.pruned, prep.config.unprune, dense)
    seconds = time.perf_counter() - start
    unchanged = None
    if state_hash(ctx.model.state_dict()) == before and not already_removed(ctx, method):
        stopping = outcome.details.get("stopping") or {}
        unchanged = stopping.get("reason") or "the method changed no weight"
    after = None
    if prep.judged is not None and unchanged is None:
        after = prep.judged.judge(f"after {method.name}", ctx.model)
    return Attempt(method, params, ctx, outcome, seconds, unchanged, after or prep.before, before)


def already_removed(ctx: ForgetContext, method: Method) -> bool:
    """A method of the store that found every affected step already subtracted (by an
    earlier request): the samples' influence left with those steps, though no weight moves."""
    return method.uses_store and ctx.affected_steps.size > 0 and steps_to_subtract(ctx).size == 0


def judge_attempt(prep: PreparedRequest, attempt: Attempt, last: bool) -> tuple[bool, str]:
    """(accept it?, why): a result that changed nothing never; else one the evidence
    does not flag beyond chance, the last one available, or a class request's (judged
    by forget accuracy, which the method's stopping rule checks)."""
    if attempt.unchanged is not None:
        return False, f"it changed nothing ({attempt.unchanged}): nothing was forgotten"
    after = attempt.after
    if after is None or prep.judged is None:
        return True, "no evidence to check it against (the run has no shadow models)"
    flagged = f"the evidence flags {after.count} of {after.n} ({after.share:.1%})"
    if after.within_band:
        return True, f"{flagged}, within what chance explains"
    if prep.choice is not None and prep.choice["facts"]["whole_class"]:
        return True, f"{flagged}; a class request is judged by forget accuracy"
    if last:
        return True, f"{flagged}, beyond chance; no method is left to try"
    return False, f"{flagged}, beyond chance: the next method is tried"


def commit(prep: PreparedRequest, attempt: Attempt, attempts: list[dict]) -> dict[str, Any]:
    """Write the accepted attempt's model, receipt and ledger as the next version."""
    ctx, outcome, method = attempt.ctx, attempt.outcome, attempt.method
    replayed = None
    if outcome.replayed_steps is not None:
        replayed = (outcome.replayed_steps, prep.run.next_version())
    new_ledger = prep.ledger.after(
        prep.version, ctx.forget_ids, outcome.subtracted_steps, not method.from_scratch, replayed
    )
    choice = None if prep.choice is None else {**prep.choice, "attempts": attempts}
    if choice is not None:
        choice["chosen"], choice["params"] = method.name, attempts[-1]["params"]
    receipt = prep.run.write_version(
        ctx.model,
        forget_receipt(prep, attempt, choice),
        ledger=new_ledger,
        hash_before=attempt.hash_before,
        files=outcome.files,
    )
    warning = None if outcome.replayed_steps is not None else heavy_warning(method, receipt)
    doc = {"noop": False, "noop_reason": None, **receipt}
    return finish(prep, doc, attempt.after, [warning] if warning else [], method.from_scratch)
