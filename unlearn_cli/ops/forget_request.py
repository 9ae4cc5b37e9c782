"""A deletion request checked against its run, before any work (`unlearn forget`).

`prepare` makes every check, cheapest first: the method and its parameters, the run
and the version it starts from (live, with what retired versions owe added), what
`auto` chooses, what the method needs (store, data, its own resources), and the
share of steps the request touches against what the method takes without damage. Where
the run has shadow models it also measures the per-example evidence on the starting
version (`before`), which every receipt carries and `auto` decides from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_cli.data import Dataset
from unlearn_cli.devices import resolve_device
from unlearn_cli.errors import DataNotFoundError, RequestError
from unlearn_cli.evidence import ALPHA, Verdict
from unlearn_cli.ledger import LedgerState
from unlearn_cli.ledger import ledger_state as read_ledger
from unlearn_cli.lineage import check_live, pending_ids
from unlearn_cli.methods import METHODS, Method, RequestFacts, Rung
from unlearn_cli.methods.support import require_store
from unlearn_cli.ops.evidence import Judged, check_alpha, check_max_residual, load_evidence
from unlearn_cli.ops.pruned import PrunedState, UnpruneParams, check_pruned_request, pruned_state
from unlearn_cli.params import validate_dataclass
from unlearn_cli.requests import ForgetRequest, takes_whole_classes
from unlearn_cli.rundir import Run
from unlearn_cli.store import UpdateStore


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
    # The evidence's false-positive rate, and the `--max-residual` gate on its result.
    alpha: float = ALPHA
    max_residual: float | None = None


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
    pending: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # owed, added
    ladder: tuple[Rung, ...] = ()  # auto: the methods to try after `method`, in order
    judged: Judged | None = None  # the evidence, with the starting version's verdict
    unverified: str | None = None  # why there is no evidence (None: there is)

    @property
    def before(self) -> Verdict | None:
        return None if self.judged is None else self.judged.verdicts["before"]

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
    check_alpha(config.alpha)
    check_max_residual(config.max_residual)
    if config.unprune is not None:
        validate_dataclass("--unprune", config.unprune)
    resolve_device(config.device)
    request.check_given()
    run = Run.open(run_path)
    version = run.resolve_version(config.from_version)
    check_live(run, version)
    pending = pending_ids(run, version)
    if pending.size:  # owed by a retired version: this request must remove them too
        request = replace(request, ids=(*request.ids, *pending.tolist()))
    ledger = read_ledger(run.version_dir(version))
    store = run.store()
    load_data = functools.cache(lambda: run.load_dataset(data_root, download))
    # (ids, class indices), resolved once when first needed (a class request reads labels)
    resolved = functools.cache(lambda: request.resolve(run.n_train, load_data, run.sample_keys))
    choice, judged, unverified = None, None, None
    ladder: tuple[Rung, ...] = ()
    if method.delegate is not None:
        ids, classes = resolved()
        judged, unverified = measure_before(run, version, ledger, ids, load_data, config.alpha)
        facts = request_facts(store, ledger, ids, classes, load_data, judged)
        choice, rungs = delegated(method, params, facts)
        method = METHODS.get(rungs[0].method)
        params = method.make_params(rungs[0].params)
        ladder = tuple(rungs[1:])
    pruned = pruned_state(run, version)
    check_method(method, params, config, run, version, ledger, store, pruned)
    # auto weighed the share already; an explicit --max-affected-share still applies
    guarded = config if choice is None else replace(config, guard=False)
    check_share(method, guarded, store, ledger, resolved, load_data)
    if method.needs_data:
        load_data()  # fail before any work if the data is not at hand
    ids, classes = resolved()
    if choice is None:
        judged, unverified = measure_before(run, version, ledger, ids, load_data, config.alpha)
    return PreparedRequest(
        run=run,
        version=version,
        ledger=ledger,
        store=store,
        load_data=load_data,
        method=method,
        params=params,
        config=config,
        request=request,
        ids=ids,
        classes=classes,
        pruned=pruned,
        choice=choice,
        pending=pending,
        ladder=ladder,
        judged=judged,
        unverified=unverified,
    )


def delegated(method: Method, params: Any, facts: RequestFacts) -> tuple[dict, list[Rung]]:
    """A delegating method's ladder for these facts, and the receipt's account of it."""
    assert method.delegate is not None
    rungs = method.delegate(params, facts)
    first = rungs[0]
    choice = {
        "chosen": first.method,
        "params": first.params,
        "why": first.why,
        "facts": asdict(facts),
        "ladder": [r.method for r in rungs],
    }
    return choice, list(rungs)


def measure_before(
    run: Run,
    version: int,
    ledger: LedgerState,
    ids: np.ndarray,
    load_data: Callable[[], Dataset],
    alpha: float,
) -> tuple[Judged | None, str | None]:
    """The evidence on the request's new samples under the starting version, or why
    there is none."""
    evidence, why = load_evidence(run, load_data, alpha)
    if evidence is None:
        return None, why
    new = np.setdiff1d(ids, ledger.forgotten_ids)
    judged = Judged(evidence, new if new.size else ids)  # nothing new: how the rest stands
    judged.judge("before", run.load_model(version))
    return judged, None


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
    resolved: Callable[[], tuple[np.ndarray, list[int]]],
    load_data: Callable[[], Dataset],
) -> None:
    """Stop before any work when the request touches more steps than the method takes
    without damage, naming what `auto` would choose instead (one table, in `auto`)."""
    limit = config.max_affected_share
    if limit is None and config.guard:
        limit = method.share_limit
    if limit is None or store is None or not ledger.store_applies:
        return
    ids, classes = resolved()
    share = affected_share(store, ledger, ids)
    if share <= limit:
        return
    auto = METHODS.get("auto")
    facts = request_facts(store, ledger, ids, classes, load_data)
    rung = auto.delegate(auto.make_params(), facts)[0]  # type: ignore[misc]
    better, values, why = rung.method, rung.params, rung.why
    if better == method.name:  # nothing better is at hand (e.g. the data is gone)
        raise RequestError(
            f"{share:.0%} of the recorded steps held a requested sample, over the "
            f"{limit:.0%} that {method.name} takes without damage; nothing was written.",
            hint=f"no better method is at hand ({why}); pass --force to run {method.name} "
            "anyway and check the result with `unlearn eval`",
        )
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
    judged: Judged | None = None,
) -> RequestFacts:
    usable = store is not None and ledger.store_applies
    share = affected_share(store, ledger, ids) if store is not None and usable else None
    try:
        labels = load_data().y_train.numpy()
    except DataNotFoundError:
        return RequestFacts(share, usable, data_available=False, whole_class=bool(classes))
    whole = bool(classes) or takes_whole_classes(labels, ids, ledger.forgotten_ids)
    before = None if judged is None else judged.verdicts["before"]
    if before is None:
        return RequestFacts(share, usable, data_available=True, whole_class=whole)
    return RequestFacts(
        share,
        usable,
        data_available=True,
        whole_class=whole,
        flagged_share=before.share,
        flagged_beyond_chance=not before.within_band,
    )
