"""Projected-gradient unlearning (Hoang, Rana, Gupta, Venkatesh, WACV 2024).

Needs the run's layer-input covariances (`unlearn covariance RUN`, or
`unlearn train --covariance`), and no retained training data:

1. On the current model, measure the covariance of every conv/linear layer's
   inputs over the samples to forget, and subtract it from the stored one: what
   is left is the retained samples' covariance.
2. Per layer, keep the top singular directions whose cumulative share of the
   singular values is at most `gamma` (`layer_gamma` overrides it per layer):
   the input space the retained samples use.
3. SGD on the forget samples with −log(1 − p_y + ε) − w·H(p), every weight
   gradient projected off those directions, so the layer's response to inputs
   in them does not change. Biases and BatchNorm (parameters and statistics)
   stay frozen; no momentum, no weight decay; the learning rate decays
   exponentially from `lr` to `lr_end` over the step budget.
4. Stop by the shared rules (`stopping`): a sample request when forget accuracy
   reaches held-out accuracy; a class request at `forget_target`, or when the
   other classes' held-out accuracy drops more than `max_retain_drop` (the
   paper's rule; `forget_target=0 patience=0` leaves only it), or after
   `patience` epochs without a new lowest forget accuracy.
5. The retained covariance becomes this version's stored one
   (`versions/NNNN/covariance.zarr`), so the next request starts from it.

Ids forgotten earlier by other methods are subtracted too, the first time a pgu
request sees them (their covariance is measured on the current model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from unlearn_cli.basis import project_off, subtract
from unlearn_cli.errors import InvalidParameterError, StoreError
from unlearn_cli.input_covariance import input_covariance, projectable_layers
from unlearn_cli.lineage import find_covariance
from unlearn_cli.methods.base import (
    Cost,
    ForgetContext,
    ForgetOutcome,
    Method,
    PlanFacts,
    param,
    register,
)
from unlearn_cli.methods.optimize import bounded_loss
from unlearn_cli.methods.stopping import StopParams, Stopper
from unlearn_cli.methods.support import train_on
from unlearn_cli.params import Interval
from unlearn_cli.store.covariance import COVARIANCE_NAME, CovarianceState, write_covariance
from unlearn_cli.training import Hooks, StepInfo, steps_per_epoch

if TYPE_CHECKING:
    from unlearn_cli.rundir import Run


@dataclass(frozen=True)
class PguParams(StopParams):
    gamma: float = param(0.95, "keep directions while cumulative singular-value share <= gamma")
    layer_gamma: str | None = param(None, "per-layer gamma, e.g. 0.0:0.9,2:0.97 (layer:gamma)")
    epochs: int = param(100, "most passes over the forget set (all of them with stop=budget)")
    lr: float = param(0.05, "learning rate at the first step")
    lr_end: float = param(0.01, "learning rate at the last step of the budget (exponential)")
    batch_size: int = param(128, "forget samples per step")
    epsilon: float = param(0.05, "ε in −log(1−p_y+ε)")
    entropy_weight: float = param(0.2, "w, the weight of the entropy term")

    constraints: ClassVar[dict] = {
        **StopParams.constraints,
        "gamma": Interval(float, 0, 1, closed="both"),
        "epochs": Interval(int, 1, None),
        "lr": Interval(float, 0, None, closed="neither"),
        "lr_end": Interval(float, 0, None, closed="neither"),
        "batch_size": Interval(int, 1, None),
        "epsilon": Interval(float, 0, None, closed="neither"),
        "entropy_weight": Interval(float, 0, None),
    }


def layer_gammas(params: PguParams, layers: list[str]) -> dict[str, float]:
    """gamma per layer: `gamma`, overridden by `layer_gamma` entries."""
    gammas = dict.fromkeys(layers, params.gamma)
    for item in filter(None, (params.layer_gamma or "").split(",")):
        name, sep, value = item.strip().rpartition(":")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not 0 <= number <= 1:
            raise InvalidParameterError(
                f"layer_gamma entries are layer:gamma with gamma in [0, 1]. Got '{item}' instead.",
                hint="e.g. -p layer_gamma=0.0:0.9,2:0.97",
            )
        if name not in gammas:
            raise InvalidParameterError(
                f"layer_gamma names layer '{name}', which the model does not project.",
                hint="conv and linear layers: " + ", ".join(layers),
            )
        gammas[name] = number
    return gammas


def exponential_lr(optimizer: torch.optim.Optimizer, start: float, end: float, steps: int):
    """on_step hook: the learning rate of step t is start * (end/start)^(t/(steps-1))."""
    done = 0

    def on_step(_: StepInfo) -> None:
        nonlocal done
        done += 1
        lr = start * (end / start) ** (min(done, steps - 1) / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr

    return on_step


def check(run: Run, version: int, params: PguParams, model: nn.Module) -> None:
    """Before any work: the statistics exist for this version, `layer_gamma` is well formed
    and names layers the model projects."""
    layer_gammas(params, list(projectable_layers(model)))
    find_covariance(run, version)


def projection(ctx: ForgetContext, state: CovarianceState, params: PguParams):
    """Subtract what this request forgets from the stored statistics, and keep each
    layer's top directions: (new bases, kept counts, gammas, directions by weight id)."""
    gammas = layer_gammas(params, list(state.bases))
    pending = np.setdiff1d(ctx.forgotten_ids, state.excluded_ids)
    c_forget = input_covariance(
        ctx.model,
        ctx.data.x_train[torch.from_numpy(pending)],
        precision=getattr(torch, state.dtype),  # as the stored sums were measured
    )
    bases = subtract(state.bases, c_forget)
    modules = projectable_layers(ctx.model)
    kept = {name: b.kept(gammas[name]) for name, b in bases.items()}
    directions = {
        id(modules[name].weight): b.vectors[:, : kept[name]].float().to(ctx.device)
        for name, b in bases.items()
    }
    return bases, kept, gammas, directions, len(pending)


def forget(ctx: ForgetContext, params: PguParams) -> ForgetOutcome:
    _, state = find_covariance(ctx.run, ctx.version)
    if not np.isin(state.excluded_ids, ctx.forgotten_ids).all():
        raise StoreError(
            "The stored layer covariances leave out samples this version has not forgotten.",
            hint="measure them for this version: `unlearn covariance RUN --version N --force`",
        )
    bases, kept, gammas, directions, pending = projection(ctx, state, params)
    modules = projectable_layers(ctx.model)
    optimizer = torch.optim.SGD(
        [modules[name].weight for name in bases], lr=params.lr, momentum=0.0, weight_decay=0.0
    )

    def grad_hook(m: nn.Module) -> None:
        for p in m.parameters():
            if id(p) in directions and p.grad is not None:
                p.grad = project_off(p.grad, directions[id(p)])
            else:
                p.grad = None  # biases, BatchNorm and unprojected layers stay frozen

    ids = torch.from_numpy(np.asarray(ctx.forget_ids, dtype=np.int64))
    planned = params.epochs * steps_per_epoch(len(ids), params.batch_size)
    stopper = Stopper(ctx, params)
    hooks = Hooks(
        loss_fn=lambda logits, y, _: bounded_loss(logits, y, params.epsilon, params.entropy_weight),
        grad_hook=grad_hook,
        on_step=exponential_lr(optimizer, params.lr, params.lr_end, planned),
        freeze_batchnorm=True,
    )
    result = train_on(
        ctx,
        ids,
        params.epochs,
        "pgu (projected gradient)",
        batch_size=params.batch_size,
        hooks=hooks,
        wrap_batches=stopper.wrap,
        optimizer=optimizer,
    )
    updated = replace(
        state,
        bases=bases,
        samples=state.samples - pending,
        excluded_ids=np.asarray(ctx.forgotten_ids, dtype=np.int64),
    )
    layers = [
        {"name": n, "dim": int(b.values.numel()), "kept": kept[n], "gamma": gammas[n]}
        for n, b in bases.items()
    ]
    return ForgetOutcome(
        details={
            "steps": result.steps,
            "stopping": stopper.details(),
            "subtracted_samples": pending,
            "retained_samples": updated.samples,
            "layers": layers,
        },
        files={COVARIANCE_NAME: functools.partial(write_covariance, state=updated)},
    )


def estimate(facts: PlanFacts, params: PguParams) -> Cost:
    """Its budget: `epochs` over the forget set at its own batch size."""
    return facts.passes(params.epochs, facts.n_forget, params.batch_size)


METHOD = register(
    Method(
        name="pgu",
        params=PguParams,
        forget=forget,
        summary="projected-gradient unlearning: no retained data (needs `unlearn covariance`)",
        needs_data=True,
        check=check,
        estimate=estimate,
    )
)
