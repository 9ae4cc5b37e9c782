"""Forgetting on a pruned version (one made by `unlearn prune`), with or without un-pruning.

A pruned version holds `masks.safetensors`. Every later version keeps a mask of
the same per-layer sparsity:

- any method without `--unprune`: the method runs on the sparse model, then the
  mask is applied again (pruned weights back to zero);
- `--unprune` (Xiao et al. 2025): each of `rounds` rounds re-grows `grow` of the
  currently pruned weights of each layer, those largest in the dense model the
  pruning started from, resets them to θ0 and runs the method on the denser
  model; at the end the model is re-pruned by magnitude to the original count
  per layer. The deleted data helped decide which weights survived pruning;
  re-growing and re-pruning lets the mask change, not only the weights.
  `rounds=0` is the plain method;
- a method that rebuilds from θ0 (`retrain`) is the reference: it retrains on the
  retained samples, then prunes again with the version's own schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unlearn_cli.errors import InvalidParameterError, RequestError
from unlearn_cli.methods.base import ForgetContext, ForgetOutcome, Method
from unlearn_cli.params import Interval, param
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


@dataclass(frozen=True)
class PrunedState:
    masks: Masks
    schedule: PruneSchedule
    dense_version: int  # the version `prune` started from

    def writer(self, masks: Masks) -> Callable[[Path], None]:
        """Writes `masks` with this state's schedule, as a version's file."""
        meta = {**self.schedule.to_dict(), "dense_version": self.dense_version}
        return lambda path: write_masks(path, masks, meta)


def pruned_state(run: Run, version: int) -> PrunedState | None:
    """The version's masks and pruning schedule; None for a dense version."""
    path = run.version_dir(version) / MASKS_NAME
    if not path.exists():
        return None
    masks, meta = read_masks(path)
    fields = ("sparsity", "rounds", "finetune_epochs", "lr")
    schedule = PruneSchedule(**{k: meta[k] for k in fields})
    return PrunedState(masks, schedule, int(meta["dense_version"]))


@dataclass(frozen=True)
class UnpruneParams:
    grow: float = param(0.1, "--unprune: share of the pruned weights re-grown each round")
    rounds: int = param(1, "--unprune: re-grow rounds (0: the plain method)")

    constraints: ClassVar[dict] = {
        "grow": Interval(float, 0, 1, closed="both"),
        "rounds": Interval(int, 0, None),
    }


def check_pruned_request(
    method: Method, unprune: UnpruneParams | None, pruned: PrunedState | None, version: int
) -> None:
    if unprune is not None and pruned is None:
        raise InvalidParameterError(
            f"--unprune applies to pruned versions; version {version} is dense.",
            hint="prune it first with `unlearn prune RUN --sparsity S`, or drop --unprune",
        )
    if unprune is not None and method.from_scratch:
        raise RequestError(
            f"--unprune does not apply to {method.name}: on a pruned version it already "
            "re-prunes from scratch with the version's own schedule.",
            hint="drop --unprune",
        )


@torch.no_grad()
def regrow(model: nn.Module, masks: Masks, dense: dict, init: dict, share: float) -> dict:
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


def forget_pruned(
    ctx: ForgetContext,
    method: Method,
    params: Any,
    pruned: PrunedState,
    unprune: UnpruneParams | None,
    dense_state: dict,
) -> ForgetOutcome:
    """Run `method` on a sparse model; the outcome carries the new version's masks."""
    if method.from_scratch:
        return _rebuild_and_reprune(ctx, method, params, pruned)
    masks = {n: m.clone() for n, m in pruned.masks.items()}
    target = {n: int((~m).sum()) for n, m in masks.items()}
    rounds = unprune.rounds if unprune is not None else 0
    outcomes, grown = [], []
    for r in range(max(1, rounds)):
        if unprune is not None and r < rounds:
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
        "mask_changed": int(sum(int((final[n] != pruned.masks[n]).sum()) for n in final)),
    }
    return ForgetOutcome(
        subtracted_steps=np.unique(np.concatenate([o.subtracted_steps for o in outcomes])),
        bytes_read=sum(o.bytes_read for o in outcomes),
        details=details,
        files={**last.files, MASKS_NAME: pruned.writer(final)},
    )


def _rebuild_and_reprune(
    ctx: ForgetContext, method: Method, params: Any, pruned: PrunedState
) -> ForgetOutcome:
    """The reference on a pruned version: rebuild from θ0, then prune with its schedule."""
    outcome = method.forget(ctx, params)
    masks, history = iterative_prune(
        ctx.model,
        ctx.data.x_train,
        ctx.data.y_train,
        ctx.retain_ids,
        ctx.config,
        pruned.schedule,
        ctx.seed,
        ctx.progress,
    )
    outcome.details["reprune"] = {"rounds": history, "sparsity": sparsity(masks)}
    outcome.files[MASKS_NAME] = pruned.writer(masks)
    return outcome
