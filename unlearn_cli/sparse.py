"""Sparse versions: `unlearn prune`, and forgetting on them (with or without un-pruning).

A version made by `prune` holds `masks.safetensors`. Every later version keeps
a mask of the same per-layer sparsity:

- any method without `--unprune`: the method runs on the sparse model, then the
  mask is applied again (pruned weights back to zero);
- `--unprune` (Xiao et al. 2025): each of `rounds` rounds re-grows `grow` of the
  currently pruned weights of each layer, those largest in the dense model the
  pruning started from, resets them to θ0 and runs the method on the denser
  model; at the end the model is re-pruned by magnitude to the original count
  per layer. The deleted data helped decide which weights survived pruning;
  re-growing and re-pruning lets the mask change, not only the weights.
  `rounds=0` is the plain method;
- `retrain` is the reference: retrain from θ0 on the retained samples, then
  prune again with the version's own schedule on the retained samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from unlearn_cli.errors import InvalidParameterError, RequestError, RunError
from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import LedgerState, append_journal, journal_entry, ledger_state
from unlearn_cli.methods.base import ForgetContext, ForgetOutcome, Method, param
from unlearn_cli.params import Interval, validate_dataclass
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.pruning import (
    Masks,
    PruneSchedule,
    apply_masks,
    iterative_prune,
    magnitude_masks,
    sparsity,
)
from unlearn_cli.rundir import Run
from unlearn_cli.store.masks import MASKS_NAME, read_masks, write_masks
from unlearn_cli.training import TrainConfig, accuracy


@dataclass(frozen=True)
class SparseState:
    masks: Masks
    schedule: PruneSchedule
    dense_version: int  # the version `prune` started from


def sparse_state(run: Run, version: int) -> SparseState | None:
    path = run.version_dir(version) / MASKS_NAME
    if not path.exists():
        return None
    masks, meta = read_masks(path)
    schedule = PruneSchedule(
        **{k: meta[k] for k in ("sparsity", "rounds", "finetune_epochs", "lr")}
    )
    return SparseState(masks, schedule, int(meta["dense_version"]))


def masks_writer(masks: Masks, sparse: SparseState):
    meta = {**sparse.schedule.to_dict(), "dense_version": sparse.dense_version}
    return lambda path: write_masks(path, masks, meta)


# -- unlearn prune ------------------------------------------------------------------
def prune_run(
    run_path: Path,
    schedule: PruneSchedule,
    *,
    from_version: int | None = None,
    seed: int | None = None,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Prune a dense version by `schedule` and write the next version with its masks."""
    validate_dataclass("prune", schedule)
    run = Run.open(run_path)
    version = run.check_version(from_version) if from_version is not None else run.latest_version()
    already = sparse_state(run, version)
    if already is not None:
        raise RunError(
            f"Version {version} is already pruned (sparsity {already.schedule.sparsity:g}).",
            hint=f"prune a dense version instead, e.g. --from {already.dense_version}",
        )
    data = run.load_dataset(data_root, download)
    config = TrainConfig(**run.meta["config"])
    seed = config.seed if seed is None else seed
    with run.lock():
        ledger = ledger_state(run.version_dir(version))
        model = run.load_model(version)
        before = state_hash(model.state_dict())
        keep = np.ones(data.n_train, dtype=bool)
        keep[ledger.forgotten_ids] = False
        start = time.perf_counter()
        masks, history = iterative_prune(
            model,
            data.x_train,
            data.y_train,
            torch.from_numpy(np.flatnonzero(keep)),
            config,
            schedule,
            seed,
            progress or NullProgress(),
        )
        seconds = time.perf_counter() - start
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        receipt = {
            "kind": "prune",
            "parent": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": "prune",
            "params": schedule.to_dict(),
            "seed": seed,
            "ids": {"requested": 0, "newly_forgotten": [], "already_forgotten": []},
            "steps": {"subtracted": []},
            "rounds": history,
            "sparsity": sparsity(masks),
            "test_accuracy": accuracy(model, data.x_test, data.y_test),
            "wall_seconds": round(seconds, 4),
            "model_hash_before": before,
            "model_hash_after": state_hash(state),
        }
        kept_ledger = LedgerState(
            ledger.forgotten_ids,
            ledger.subtracted_steps,
            ledger.store_applies,
            version,
            ledger.requests,
        )
        sparse = SparseState(masks, schedule, version)
        written = run.write_version(
            state,
            receipt,
            {"ledger.json": kept_ledger.to_dict()},
            {MASKS_NAME: masks_writer(masks, sparse)},
        )
        append_journal(run.path, journal_entry(written, receipt))
    return {"version": written, **receipt}


# -- forgetting on a sparse version ----------------------------------------------------
@dataclass(frozen=True)
class UnpruneParams:
    grow: float = param(0.1, "--unprune: share of the pruned weights re-grown each round")
    rounds: int = param(1, "--unprune: re-grow rounds (0: the plain method)")

    constraints: ClassVar[dict] = {
        "grow": Interval(float, 0, 1, closed="both"),
        "rounds": Interval(int, 0, None),
    }


UNPRUNE = Method("--unprune", UnpruneParams, lambda ctx, p: ForgetOutcome(), "un-pruning")


def split_unprune(pairs: list[str], unprune: bool) -> tuple[list[str], UnpruneParams | None]:
    """(the method's own pairs, the un-pruning params when --unprune was given)."""
    if not unprune:
        return pairs, None
    ours = set(UnpruneParams.__dataclass_fields__)
    mine = [p for p in pairs if p.partition("=")[0].strip() in ours]
    return [p for p in pairs if p not in mine], UNPRUNE.parse_params(mine)


def check_sparse_request(
    method: Method, unprune: UnpruneParams | None, sparse: SparseState | None, version: int
) -> None:
    if unprune is not None and sparse is None:
        raise InvalidParameterError(
            f"--unprune applies to pruned versions; version {version} is dense.",
            hint="prune it first with `unlearn prune RUN --sparsity S`, or drop --unprune",
        )
    if unprune is not None and method.name == "retrain":
        raise RequestError(
            "--unprune does not apply to retrain: on a sparse version retrain already "
            "re-prunes from scratch with the version's own schedule.",
            hint="drop --unprune",
        )


@torch.no_grad()
def regrow(model, masks: Masks, dense: dict, init: dict, share: float) -> dict[str, int]:
    """Re-grow `share` of each tensor's pruned weights (largest in `dense`), reset to θ0."""
    params = dict(model.named_parameters())
    grown = {}
    for name, keep in masks.items():
        pruned = (~keep).flatten().nonzero().squeeze(1)
        n = round(share * len(pruned))
        grown[name] = n
        if n == 0:
            continue
        order = torch.argsort(dense[name].abs().flatten()[pruned], descending=True, stable=True)
        chosen = pruned[order[:n]]
        keep.view(-1)[chosen] = True
        p = params[name]
        p.view(-1)[chosen] = init[name].flatten()[chosen].to(device=p.device, dtype=p.dtype)
    return grown


def forget_sparse(
    ctx: ForgetContext,
    method: Method,
    params,
    sparse: SparseState,
    unprune: UnpruneParams | None,
    dense_state: dict,
) -> ForgetOutcome:
    """Run `method` on a sparse model and return its outcome with the new version's masks."""
    if method.name == "retrain":
        outcome = method.forget(ctx, params)
        masks, history = iterative_prune(
            ctx.model,
            ctx.data.x_train,
            ctx.data.y_train,
            ctx.retain_ids,
            ctx.config,
            sparse.schedule,
            ctx.seed,
            ctx.progress,
        )
        outcome.details["reprune"] = {"rounds": history, "sparsity": sparsity(masks)}
        outcome.files[MASKS_NAME] = masks_writer(masks, sparse)
        return outcome
    masks = {n: m.clone() for n, m in sparse.masks.items()}
    target = {n: int((~m).sum()) for n, m in masks.items()}
    rounds = unprune.rounds if unprune is not None else 0
    outcomes, grown = [], []
    for r in range(max(1, rounds)):
        if r < rounds:
            grown.append(regrow(ctx.model, masks, dense_state, ctx.init_state, unprune.grow))
        out = method.forget(ctx, params)
        apply_masks(ctx.model, masks)
        ctx.subtracted_steps = np.union1d(ctx.subtracted_steps, out.subtracted_steps)
        outcomes.append(out)
    final = magnitude_masks(dict(ctx.model.named_parameters()), target, masks)
    apply_masks(ctx.model, final)
    last = outcomes[-1]
    details = (
        dict(last.details) if len(outcomes) == 1 else {"rounds": [o.details for o in outcomes]}
    )
    details["sparse"] = {
        "sparsity": sparsity(final),
        "unprune": None
        if unprune is None
        else {"grow": unprune.grow, "rounds": rounds, "regrown": grown},
        "mask_changed": int(sum(int((final[n] != sparse.masks[n]).sum()) for n in final)),
    }
    return ForgetOutcome(
        subtracted_steps=np.unique(np.concatenate([o.subtracted_steps for o in outcomes])),
        bytes_read=sum(o.bytes_read for o in outcomes),
        details=details,
        files={**last.files, MASKS_NAME: masks_writer(final, sparse)},
    )
