"""Which entries of each trainable tensor an update may change (layer-wise partial updates,
pruned models): the mask's hooks plug into the one training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unlearn_cli.training import Hooks


@dataclass
class ParamMask:
    """Which entries of each trainable tensor may change; the rest keep `frozen`'s values
    (their gradients are zeroed and their values restored after each step, so momentum
    and weight decay cannot move them either)."""

    masks: dict[str, torch.Tensor]  # bool, shaped like the parameter
    frozen: dict[str, torch.Tensor]  # the values held where the mask is False

    def grad_hook(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if p.grad is not None and name in self.masks:
                p.grad.mul_(self.masks[name])

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks:
                p.copy_(torch.where(self.masks[name], p, self.frozen[name]))

    def hooks(self, model: nn.Module) -> Hooks:
        return Hooks(grad_hook=self.grad_hook, on_step=lambda _: self.restore(model))

    def updated_fractions(self) -> dict[str, float]:
        return {name: round(float(m.float().mean()), 6) for name, m in self.masks.items()}
