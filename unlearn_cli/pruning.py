"""Sparse models: iterative magnitude pruning, masks, and how alike two masks are.

Only the weights of conv and linear layers are pruned; biases and BatchNorm are
untouched. Every layer reaches the same sparsity S exactly: round(S * n) of its n
weights, those of smallest magnitude (ties by position). Round r of R prunes to
1 - (1 - S)^(r/R), then fine-tunes on the retained samples with pruned weights
held at exactly zero (their gradients are masked and their values restored
after each step, so momentum and weight decay cannot revive them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from unlearn_cli.param_mask import ParamMask
from unlearn_cli.params import Interval
from unlearn_cli.progress import Progress
from unlearn_cli.train_config import TrainConfig, optimizer_for
from unlearn_cli.training import train_epochs

Masks = dict[str, torch.Tensor]  # parameter name -> bool, True = kept


@dataclass(frozen=True)
class PruneSchedule:
    sparsity: float
    rounds: int = 3
    finetune_epochs: int = 1
    lr: float | None = None  # fine-tuning lr (default: the run's)

    constraints: ClassVar[dict] = {
        "sparsity": Interval(float, 0, 1, closed="left"),
        "rounds": Interval(int, 1, None),
        "finetune_epochs": Interval(int, 0, None),
        "lr": [Interval(float, 0, None, closed="neither"), None],
    }

    def sparsities(self) -> list[float]:
        """The sparsity after each round; the last is exactly `sparsity`."""
        steps = [1 - (1 - self.sparsity) ** (r / self.rounds) for r in range(1, self.rounds)]
        return [*steps, self.sparsity]

    def to_dict(self) -> dict:
        return asdict(self)


def prunable(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights, in model order."""
    return [
        f"{name}.weight" if name else "weight"
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]


def magnitude_masks(
    weights: Mapping[str, torch.Tensor], pruned: dict[str, int], eligible: Masks | None = None
) -> Masks:
    """Per tensor, prune exactly `pruned[name]` weights of smallest |w|.

    Positions outside `eligible` (already pruned) go first, so masks only shrink.
    """
    masks = {}
    for name, count in pruned.items():
        score = weights[name].detach().abs().flatten().double().cpu()
        if eligible is not None:
            score = torch.where(eligible[name].flatten(), score, torch.full_like(score, -1.0))
        order = torch.argsort(score, stable=True)
        keep = torch.ones(score.numel(), dtype=torch.bool)
        keep[order[:count]] = False
        masks[name] = keep.view(weights[name].shape)
    return masks


def pruned_counts(model: nn.Module, sparsity: float) -> dict[str, int]:
    params = dict(model.named_parameters())
    return {name: round(sparsity * params[name].numel()) for name in prunable(model)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        p = params[name]
        p.mul_(keep.to(device=p.device, dtype=p.dtype))


def sparsity(masks: Masks) -> dict:
    """Pruned share per tensor and overall."""
    layers = {name: round(1 - float(m.float().mean()), 6) for name, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {"overall": round(1 - kept / total, 6) if total else 0.0, "layers": layers}


def mask_overlap(a: Masks, b: Masks) -> dict:
    """Intersection over union of the kept weights, per tensor and overall."""
    layers, inter_sum, union_sum = {}, 0, 0
    for name in a:
        inter = int((a[name] & b[name]).sum())
        union = int((a[name] | b[name]).sum())
        layers[name] = round(inter / union, 6) if union else 1.0
        inter_sum, union_sum = inter_sum + inter, union_sum + union
    return {"overall": round(inter_sum / union_sum, 6) if union_sum else 1.0, "layers": layers}


def hold_masks(masks: Masks, model: nn.Module) -> ParamMask:
    """A ParamMask that keeps pruned weights at exactly zero while training."""
    params = dict(model.named_parameters())
    devs = {n: m.to(params[n].device) for n, m in masks.items()}
    return ParamMask(devs, {n: torch.zeros_like(params[n]) for n in masks})


def iterative_prune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    config: TrainConfig,
    schedule: PruneSchedule,
    seed: int,
    progress: Progress | None = None,
    class_weights: torch.Tensor | None = None,
) -> tuple[Masks, list[dict]]:
    """Prune `model` in place by `schedule`, fine-tuning on samples `ids` between rounds."""
    masks: Masks = {}
    history = []
    for r, target in enumerate(schedule.sparsities()):
        weights = dict(model.named_parameters())
        masks = magnitude_masks(weights, pruned_counts(model, target), masks or None)
        apply_masks(model, masks)
        steps = 0
        if schedule.finetune_epochs:
            hold = hold_masks(masks, model)
            result = train_epochs(
                model,
                optimizer_for(config, model, lr=schedule.lr),
                x,
                y,
                ids,
                epochs=schedule.finetune_epochs,
                batch_size=config.batch_size,
                seed=seed + r,
                hooks=replace(hold.hooks(model), class_weights=class_weights),
                progress=progress,
                what=f"prune round {r + 1}/{schedule.rounds} to {target:.1%}, fine-tune",
            )
            steps = result.steps
        history.append({"round": r + 1, "sparsity": round(target, 6), "finetune_steps": steps})
    return masks, history
