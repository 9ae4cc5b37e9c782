"""`unlearn forget --dry-run`: what a request touches and what each method would cost.

Resolves the request against the run and the version it starts from, exactly as a
real forget does (every check runs; the guard on the affected share reports rather
than stops), then estimates, per candidate method, the rows of the store and the
training samples it would read and the optimizer steps it would run, against
retraining. Writes nothing and takes no lock.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_cli.methods import METHODS, Cost, Method, PlanFacts
from unlearn_cli.methods.support import steps_to_subtract_from
from unlearn_cli.ops.forget_request import (
    ForgetConfig,
    affected_share,
    prepare,
    request_facts,
)
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.store.base import numpy_value_dtype
from unlearn_cli.train_config import TrainConfig
from unlearn_cli.training import steps_per_epoch


def plan_request(
    run_path: Path,
    config: ForgetConfig,
    request: ForgetRequest,
    *,
    data_root: Path | None = None,
    download: bool = False,
) -> dict[str, Any]:
    prep = prepare(
        run_path,
        replace(config, guard=False, max_affected_share=None),
        request,
        data_root,
        download,
    )
    run, store, ledger = prep.run, prep.store, prep.ledger
    train = TrainConfig(**run.meta["config"])
    new = prep.new_ids
    retain = run.n_train - np.union1d(ledger.forgotten_ids, new).size
    # a custom loop recorded without a dataset keeps no training settings: nothing retrains
    has_data = run.meta["config"].get("dataset") is not None
    retrain_steps = train.epochs * steps_per_epoch(retain, train.batch_size) if has_data else 0
    usable = store is not None and ledger.store_applies
    affected = store.steps_touching(new) if store is not None else np.empty(0, np.int64)
    to_subtract = steps_to_subtract_from(affected, ledger.subtracted_steps, ledger.replayed)
    auto = METHODS.get("auto")
    known = request_facts(store, ledger, prep.ids, prep.classes, prep.load_data, prep.judged)
    ladder = auto.delegate(auto.make_params(), known)  # type: ignore[misc]
    forgotten = np.union1d(ledger.forgotten_ids, new)
    facts = PlanFacts(store, to_subtract, forgotten, int(new.size), retain, train)
    methods = [
        estimate(METHODS.get(name), facts, usable, retrain_steps, has_data)
        for name in METHODS.names()
        if METHODS.get(name).delegate is None  # auto: its choice is shown above
    ]
    return {
        "dry_run": True,
        "run": str(run.path),
        "from_version": prep.version,
        "request": {**request.describe(prep.run.samples()), "class_indices": prep.classes},
        "ids": {
            "requested": int(prep.ids.size),
            "new": int(new.size),
            "already_forgotten": int(prep.already.size),
        },
        "steps": {
            "total": int(store.info().committed_steps) if store is not None else None,
            "affected": int(affected.size),
            "affected_share": affected_share(store, ledger, prep.ids) if store and usable else None,
            "to_subtract": int(to_subtract.size),
        },
        "retrain_steps": retrain_steps,
        "auto": {
            "chosen": ladder[0].method,
            "params": ladder[0].params,
            "why": ladder[0].why,
            "ladder": [r.method for r in ladder],
        },
        "evidence_before": None if prep.before is None else prep.before.summary(),
        "methods": methods,
    }


def estimate(
    method: Method, facts: PlanFacts, usable: bool, retrain_steps: int, has_data: bool
) -> dict[str, Any]:
    """What `method` would read and run for this request, with its default parameters
    (upper bounds where a stopping rule may end it sooner): its own `estimate` hook."""
    store, steps = facts.store, facts.steps
    rows = int(steps.size) if method.uses_store else 0
    row_bytes = 0
    if store is not None:
        layout = store.layout
        row_bytes = layout.row_width * (4 + numpy_value_dtype(layout.value_dtype).itemsize)
    runs = has_data or not method.needs_data
    cost = method.estimate(facts, method.make_params()) if method.estimate and runs else Cost()
    applies = (usable or not method.uses_store) and runs
    share = steps.size / max(1, store.info().committed_steps) if store is not None else None
    over = method.share_limit is not None and share is not None and share > method.share_limit
    return {
        "method": method.name,
        "applies": applies,
        "store_rows": rows,
        "store_bytes": rows * row_bytes,
        "training_samples": cost.training_samples,
        "training_steps": cost.training_steps,
        "cost_vs_retrain": cost.training_steps / retrain_steps if retrain_steps else None,
        "over_share_limit": bool(over),
    }
