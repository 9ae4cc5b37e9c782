"""The form `pgu` keeps a layer's input covariance in, and the projection it applies.

C = U diag(S^2) U^T (S are the singular values of the layer's representation matrix,
descending; `input_covariance.py` measures C). A request subtracts the forget set's C
exactly (`subtract`), and each retained-descent step removes from a weight's gradient
its component in the span of the directions kept at threshold gamma (`project_off`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
