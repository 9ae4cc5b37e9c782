"""`forget_run`: apply one deletion request to a run and write the next version.

Order of work: everything that can be checked is checked before any file is
written (the dataset is read only when the request or the method needs it, so
subtracting recorded updates works after the training data is gone); then the
method edits a private copy of the model; then one atomic rename commits model,
receipt and ledger together; then a line is appended to the journal. A failure
or kill at any point leaves every existing version as it was.
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

from unlearn_cli.covariance import find_covariance
from unlearn_cli.data import Dataset
from unlearn_cli.errors import RequestError, StoreError
from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import (
    LedgerState,
    append_journal,
    journal_entry,
    journal_versions,
    ledger_state,
)
from unlearn_cli.methods import METHODS, ForgetContext, Method
from unlearn_cli.methods.support import require_store
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.runner import resolve_device
from unlearn_cli.sparse import (
    SparseState,
    UnpruneParams,
    check_sparse_request,
    forget_sparse,
    sparse_state,
    split_unprune,
)
from unlearn_cli.store import UpdateStore, ZarrUpdateStore
from unlearn_cli.training import TrainConfig

# Above this share of affected steps, subtracting updates removes much of what the
# model learned. The amnesiac paper: accuracy holds while about 1% of batches are
# removed. Our MNIST/LeNet sweep (benchmarks/results/forget.md): at 3.6% of steps
# conventional amnesiac lost 1 point of test accuracy, at 11% it lost 33 (partial: 7).
HEAVY_SHARE = 0.05
SUITED_FOR_HEAVY = "retrain (exact), or amnesiac with -p finetune_epochs=1"


def open_store(run: Run) -> UpdateStore | None:
    """The run's update store, checked to belong to its model; None if not recorded."""
    if not (run.store_path / "zarr.json").exists():
        return None
    store = ZarrUpdateStore.open(run.store_path)
    info = store.info()
    expected = run.meta["model"]["fingerprint"]
    if info.model_fingerprint != expected:
        raise StoreError(
            f"The update store in {run.path} belongs to another model (fingerprint "
            f"{info.model_fingerprint[:12]} != {expected[:12]} in run.json).",
            hint="the store was copied from another run; train this run again",
        )
    if not info.complete:
        raise StoreError(
            f"The update store in {run.path} is incomplete ({info.committed_steps} of "
            f"{info.planned_steps} steps).",
            hint="train the run again with `unlearn train ... --force`",
        )
    return store


def check_method_applies(method: Method, ledger: LedgerState, version: int) -> None:
    if method.uses_store and not ledger.store_applies:
        raise RequestError(
            f"Version {version} was rebuilt without the recorded trajectory (by retrain), "
            f"so {method.name} cannot subtract recorded updates from it.",
            hint="forget from an earlier version with --from, or use --method retrain",
        )


def sync_journal(run: Run) -> None:
    """Restore journal lines a kill left out (the version committed, the append did not)."""
    seen = journal_versions(run.path)
    for version in run.versions()[1:]:
        if version not in seen:
            append_journal(run.path, journal_entry(version, run.receipt(version)))


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
    request: ForgetRequest
    ids: np.ndarray  # every requested id, sorted unique
    classes: list[int]
    sparse: SparseState | None = None  # the version's pruning masks, if it is sparse
    unprune: UnpruneParams | None = None  # --unprune's settings

    @property
    def new_ids(self) -> np.ndarray:
        return np.setdiff1d(self.ids, self.ledger.forgotten_ids, assume_unique=True)

    @property
    def already(self) -> np.ndarray:
        return np.intersect1d(self.ids, self.ledger.forgotten_ids, assume_unique=True)


def prepare(
    run_path: Path,
    method_name: str,
    param_pairs: list[str],
    request: ForgetRequest,
    from_version: int | None = None,
    data_root: Path | None = None,
    download: bool = False,
    unprune: bool = False,
) -> PreparedRequest:
    """Every check, cheapest first: method and params, run, version, store, then data."""
    method = METHODS.get(method_name)
    param_pairs, unprune_params = split_unprune(param_pairs, unprune)
    params = method.parse_params(param_pairs)
    request.check_given()
    run = Run.open(run_path)
    version = run.check_version(from_version) if from_version is not None else run.latest_version()
    sparse = sparse_state(run, version)
    check_sparse_request(method, unprune_params, sparse, version)
    ledger = ledger_state(run.version_dir(version))
    check_method_applies(method, ledger, version)
    store = open_store(run)
    if method.uses_store:
        require_store(store, method.name)
    if method.uses_covariance:
        find_covariance(run, version)  # fail before any work if pgu has no statistics
    load_data = functools.cache(lambda: run.load_dataset(data_root, download))
    if method.needs_data:
        load_data()  # fail before any work if the data is not at hand
    ids, classes = request.resolve(run.meta["dataset"]["n_train"], load_data)
    return PreparedRequest(
        run,
        version,
        ledger,
        store,
        load_data,
        method,
        params,
        request,
        ids,
        classes,
        sparse,
        unprune_params,
    )


def forget_run(
    run_path: Path,
    method_name: str,
    param_pairs: list[str],
    request: ForgetRequest,
    *,
    from_version: int | None = None,
    data_root: Path | None = None,
    download: bool = False,
    device: str = "cpu",
    seed: int | None = None,
    progress: Progress | None = None,
    unprune: bool = False,
) -> dict[str, Any]:
    """Apply `request` with a method; returns the receipt (`noop: true` when nothing to do)."""
    dev = resolve_device(device)
    prep = prepare(
        run_path, method_name, param_pairs, request, from_version, data_root, download, unprune
    )
    with prep.run.lock():
        sync_journal(prep.run)
        if prep.new_ids.size == 0:
            return {
                "noop": True,
                "version": prep.version,
                "method": prep.method.name,
                "ids": {"requested": int(prep.ids.size), "already_forgotten": int(prep.ids.size)},
            }
        return apply(prep, dev, seed, progress or NullProgress())


def make_context(
    prep: PreparedRequest, device: torch.device, seed: int | None, progress: Progress
) -> ForgetContext:
    """What the method receives: a private copy of the model and the request's ids."""
    run, ledger, store, new_ids = prep.run, prep.ledger, prep.store, prep.new_ids
    config = TrainConfig(**run.meta["config"])
    affected = store.steps_touching(new_ids) if store is not None else None
    return ForgetContext(
        model=run.load_model(prep.version).to(device),
        load_data=prep.load_data,
        n_train=run.meta["dataset"]["n_train"],
        config=config,
        forget_ids=new_ids,
        forgotten_ids=np.union1d(ledger.forgotten_ids, new_ids),
        subtracted_steps=ledger.subtracted_steps,
        affected_steps=affected if affected is not None else np.empty(0, np.int64),
        store=store,
        init_state=run.load_state(None),
        seed=config.seed if seed is None else seed,
        progress=progress,
        load_covariance=lambda: find_covariance(run, prep.version)[1],
    )


def apply(prep: PreparedRequest, device: torch.device, seed: int | None, progress: Progress):
    """Run the method on a private copy of the model and commit the next version."""
    run, ledger, store, new_ids = prep.run, prep.ledger, prep.store, prep.new_ids
    ctx = make_context(prep, device, seed, progress)
    model, seed = ctx.model, ctx.seed
    affected = ctx.affected_steps if store is not None else None
    before = state_hash(model.state_dict())
    torch.manual_seed(seed)
    start = time.perf_counter()
    if prep.sparse is None:
        outcome = prep.method.forget(ctx, prep.params)
    else:
        dense = run.load_state(prep.sparse.dense_version)
        outcome = forget_sparse(ctx, prep.method, prep.params, prep.sparse, prep.unprune, dense)
    seconds = time.perf_counter() - start

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    total_steps = store.info().committed_steps if store is not None else run.meta["steps"]
    receipt = {
        "kind": "forget",
        "parent": prep.version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": prep.method.name,
        "params": asdict(prep.params),
        "unprune": None if prep.unprune is None else asdict(prep.unprune),
        "seed": seed,
        "request": {**prep.request.describe(), "class_indices": prep.classes},
        "ids": {
            "requested": int(prep.ids.size),
            "newly_forgotten": new_ids.tolist(),
            "already_forgotten": prep.already.tolist(),
        },
        "steps": {
            "total": int(total_steps),
            "affected": None if affected is None else int(affected.size),
            "affected_share": None if affected is None else affected.size / max(1, total_steps),
            "subtracted": outcome.subtracted_steps.tolist(),
            "already_subtracted": (
                0 if affected is None else int(np.isin(affected, ledger.subtracted_steps).sum())
            ),
        },
        "bytes_read": outcome.bytes_read,
        "wall_seconds": round(seconds, 4),
        "data_read": prep.load_data.cache_info().currsize > 0,
        "model_hash_before": before,
        "model_hash_after": state_hash(state),
        "details": outcome.details,
    }
    new_ledger = ledger.after(
        prep.version, new_ids, outcome.subtracted_steps, prep.method.keeps_trajectory
    )
    written = run.write_version(
        state, receipt, {"ledger.json": new_ledger.to_dict()}, outcome.files
    )
    append_journal(run.path, journal_entry(written, receipt))
    return {"version": written, **receipt, "warning": heavy_warning(prep.method, receipt)}


def heavy_warning(method: Method, receipt: dict) -> str | None:
    share = receipt["steps"]["affected_share"]
    if share is None or share <= HEAVY_SHARE or not method.uses_store:
        return None
    return (
        f"{share:.0%} of all training steps held a requested sample: subtracting that many "
        f"updates removes much of what the model learned. Better suited: {SUITED_FOR_HEAVY}."
    )
