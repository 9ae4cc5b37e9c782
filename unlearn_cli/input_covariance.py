"""Layer-input covariances: the maths of projected-gradient unlearning (Hoang et al. 2024).

For every conv and linear layer, C = sum over samples of r r^T, where r is an
input the layer's weight multiplies: a linear layer's input vector, or each of a
conv layer's unfolded patches (C_in*kh*kw, with the layer's own padding, stride
and dilation, so that the weight gradient is a sum of outer products with these
very patches). Sums, not means, so that subtracting a subset's C is exact.
The products r^T r are computed at the precision the covariances are stored in
(float32 by default: a whole measurement 1.5-1.7x faster than with float64 products on
a CPU, benchmarks/results/covariance.md) over at most `CHUNK_ROWS` rows at a time, and
summed in float64; `--dtype float64` computes every product in float64. In float32 an
entry is off by under 1e-6 of the layer's largest (1.3e-4 on a first layer of 9
raw-pixel inputs, whose entries sum many near-equal products), which left every layer's
kept count at gamma 0.95 unchanged on three MNIST models.

The stored form is the eigen-decomposition C = U diag(S^2) U^T (S are the
singular values of the representation matrix, descending).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.progress import NullProgress, Progress

CHUNK_ROWS = 16384  # rows per product: bounds float32 rounding in long sums


def projectable_layers(model: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """Conv2d (ungrouped) and Linear modules by name: the layers PGU projects."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    }


def layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(rows, d): the vectors `module`'s weight multiplies for input `x`."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(
            x,
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,  # type: ignore[arg-type]  # str padding is resolved by unfold
            stride=module.stride,
        )  # (B, C*kh*kw, L), channel-major like weight.view(out, -1)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def input_covariance(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 256,
    progress: Progress | None = None,
    precision: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """C per projectable layer (float64, on the CPU) over the samples `x`, in eval mode:
    each batch's products in `precision` (never below the layer inputs' own, nor below
    float32), their sums in float64."""
    layers = projectable_layers(model)
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def pre(module: nn.Module, args: tuple) -> None:
            r = layer_inputs(module, args[0])
            r = r.to(torch.promote_types(torch.promote_types(r.dtype, precision), torch.float32))
            for start in range(0, len(r), CHUNK_ROWS):
                rows = r[start : start + CHUNK_ROWS]
                sums[name].add_(rows.T @ rows)

        return pre

    for name, m in layers.items():
        d = m.weight.shape[1:].numel()
        sums[name] = torch.zeros(d, d, dtype=torch.float64, device=device)
    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        progress = progress or NullProgress()
        progress.start(-(-len(x) // batch_size), "layer covariances")
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(device))
            progress.advance(1, {})
        progress.stop()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: c.cpu() for name, c in sums.items()}


@dataclass(frozen=True)
class Basis:
    """One layer's C = vectors diag(values^2) vectors^T, values descending."""

    vectors: torch.Tensor  # (d, d), columns are directions
    values: torch.Tensor  # (d,) singular values, descending, >= 0

    @classmethod
    def from_covariance(cls, c: torch.Tensor) -> Basis:
        c = (c.double() + c.double().T) / 2
        scale = float(c.abs().max())
        if scale == 0:  # a layer that only ever saw zeros
            d = c.shape[0]
            return cls(torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64))
        try:
            eig, vec = torch.linalg.eigh(c / scale)  # ascending
            eig, vec = eig.flip(0), vec.flip(1)
        except torch.linalg.LinAlgError:  # many repeated eigenvalues: the SVD still converges
            vec, eig, _ = torch.linalg.svd(c / scale)
        return cls(vec, (eig.clamp(min=0) * scale).sqrt())

    def covariance(self) -> torch.Tensor:
        u = self.vectors.double()
        return (u * self.values.double().square()) @ u.T

    def kept(self, gamma: float) -> int:
        """Directions whose cumulative singular value share is at most gamma."""
        total = float(self.values.sum())
        if total <= 0:
            return 0
        share = torch.cumsum(self.values.double(), 0) / total
        return int((share <= gamma + 1e-12).sum())


def subtract(bases: dict[str, Basis], forget: dict[str, torch.Tensor]) -> dict[str, Basis]:
    """The bases of C - C_forget, layer by layer (float64)."""
    return {name: Basis.from_covariance(b.covariance() - forget[name]) for name, b in bases.items()}


def project_off(grad: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """grad (out x d view) minus its component in span(directions): g - (g U) U^T."""
    g = grad.reshape(grad.shape[0], -1)
    u = directions.to(dtype=g.dtype, device=g.device)
    return (g - (g @ u) @ u.T).view_as(grad)
