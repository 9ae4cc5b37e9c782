"""Layer-input covariances: the maths of projected-gradient unlearning (Hoang et al. 2024).

For every conv and linear layer, C = sum over samples of r r^T, where r is an
input the layer's weight multiplies: a linear layer's input vector, or each of a
conv layer's unfolded patches (C_in*kh*kw, with the layer's own padding, stride
and dilation, so that the weight gradient is a sum of outer products with these
very patches). Sums, not means, so that subtracting a subset's C is exact.
The products r^T r are computed at the precision the covariances are stored in
(float32 by default: a whole measurement 1.6-2.0x faster than with float64 products on
a CPU, benchmarks/results/covariance.md) over at most `CHUNK_ROWS` rows at a time, and
summed in float64; `--dtype float64` computes every product in float64. In float32 an
entry is off by under 1e-6 of the layer's largest (1.3e-4 on a first layer of 9
raw-pixel inputs, whose entries sum many near-equal products), which left every layer's
kept count at gamma 0.95 unchanged on three MNIST models.

A stride-1 convolution's patches overlap, and its C repeats itself: the block of C for
kernel offsets (i, i') sums x[s] x[s + d(i' - i)]^T over input positions s, so it depends
on i and i' only through their difference, except where the patch window meets the
image's edge. `shifted_conv_products` computes each of those (2k-1)^2 channel products
once, as one product of two row ranges of the zero-margined image (no unfold), and
subtracts the pairs at the edge rows and columns that a window leaves out. It runs where
`shifts_pay` estimates it under 0.7 of the unfold's cost (32 channels or more, an image
large against the kernel); the two agree to float rounding (`tests/test_pgu.py`), and on
ResNet-9 a whole measurement is faster (`benchmarks/results/covariance.md`).

The stored form, C = U diag(S^2) U^T, and the projection are `basis.py`.
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


@dataclass(frozen=True)
class ConvGeometry:
    """A stride-1 conv's kernel (kh, kw), dilation (dh, dw) and zero padding (ph, pw)."""

    kh: int
    kw: int
    dh: int
    dw: int
    ph: int
    pw: int

    @classmethod
    def of(cls, module: nn.Module) -> ConvGeometry | None:
        """The geometry of an ungrouped stride-1 conv with integer padding, else None."""
        if not isinstance(module, nn.Conv2d) or module.groups != 1 or module.stride != (1, 1):
            return None
        padding = module.padding
        if isinstance(padding, str):
            return None
        return cls(*module.kernel_size, *module.dilation, *padding)

    def edges(self, h: int, w: int) -> tuple[list[int], list[int]]:
        """The input rows and columns some kernel offset's window leaves out: the first and
        the last d(k-1) - p of each."""

        def edge(size: int, k: int, dilation: int, padding: int) -> list[int]:
            width = max(0, dilation * (k - 1) - padding)
            return sorted({*range(min(width, size)), *range(max(0, size - width), size)})

        return edge(h, self.kh, self.dh, self.ph), edge(w, self.kw, self.dw, self.pw)

    def outside(self, lines: list[int], rows: bool, size: int) -> list[list[int]]:
        """Per kernel offset i: the positions in `lines` of the lines outside its window
        [d*i - p, d*i - p + out)."""
        k, d, p = (self.kh, self.dh, self.ph) if rows else (self.kw, self.dw, self.pw)
        size_out = size + 2 * p - d * (k - 1)
        return [
            [n for n, line in enumerate(lines) if not 0 <= line - (d * i - p) < size_out]
            for i in range(k)
        ]


SHIFT_OVERHEAD = 400  # multiply-adds that one float64 entry of a per-batch D x D pass costs


def shifts_pay(module: nn.Module, x: torch.Tensor) -> bool:
    """True when `shifted_conv_products` applies to `module` on the batch `x` (a stride-1
    conv with integer zero padding and at least 32 input channels: narrower products run
    too slowly to gain) and its estimated cost is under 0.7 of the unfold's: its
    multiply-adds, plus `SHIFT_OVERHEAD` for each entry of its per-batch passes over D x D
    and edge sums (measured on this project's 2-core CPU; `bench_covariance.py`)."""
    geo = ConvGeometry.of(module)
    if geo is None or x.dim() != 4 or x.shape[1] < 32:
        return False
    b, c, h, w = x.shape
    mh, mw = geo.dh * (geo.kh - 1), geo.dw * (geo.kw - 1)
    ho, wo = h + 2 * geo.ph - mh, w + 2 * geo.pw - mw
    if ho <= 0 or wo <= 0:
        return False
    shifts, taps = (2 * geo.kh - 1) * (2 * geo.kw - 1), geo.kh * geo.kw
    rows, cols = geo.edges(h, w)
    products = (shifts + 1) // 2 * (h + mh) * (w + mw) + shifts * (len(rows) * w + len(cols) * h)
    passes = 3 * taps * taps + shifts * (len(rows) + len(cols) + len(rows) * len(cols))
    cost = b * products * c * c + SHIFT_OVERHEAD * passes * c * c
    return 10 * cost < 7 * taps * taps * c * c * b * ho * wo


def shifted_conv_products(conv: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sum r r^T over the unfolded patches of `x` (B, C, H, W) for a stride-1 `conv` with
    integer zero padding, as float64 (D, D), D = C*kh*kw in the unfold's (channel-major)
    order, without unfolding: see the module docstring."""
    geo = ConvGeometry.of(conv)
    if geo is None:
        raise ValueError(f"not an ungrouped stride-1 Conv2d with integer padding: {conv}")
    c, (h, w) = x.shape[1], x.shape[2:]
    g = _shift_products(geo, x, dtype)  # (C, C, 2kh-1, 2kw-1)
    # the block for offsets (i, i') is G[i' - i] less the pairs whose first position lies
    # outside offset i's window: at rows and columns of the image's edges
    rows, cols = geo.edges(h, w)
    row_sums, col_sums, corners = _edge_products(geo, x, dtype, rows, cols)
    out_rows, out_cols = geo.outside(rows, True, h), geo.outside(cols, False, w)
    out = torch.empty(c, geo.kh, geo.kw, c, geo.kh, geo.kw, dtype=torch.float64, device=x.device)
    ih, iw = torch.arange(geo.kh), torch.arange(geo.kw)
    for i in range(geo.kh):
        for j in range(geo.kw):
            grid = (..., (ih - i + geo.kh - 1).view(-1, 1), (iw - j + geo.kw - 1).view(1, -1))
            kept = g[grid]  # (C, C, kh, kw): G[i' - i, j' - j] for every (i', j')
            for n in out_rows[i]:
                kept -= row_sums[n][grid]
                for m in out_cols[j]:
                    kept += corners[n][m][grid]
            for m in out_cols[j]:
                kept -= col_sums[m][grid]
            out[:, i, j] = kept
    d = c * geo.kh * geo.kw
    return out.view(d, d)


def _shift_products(geo: ConvGeometry, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """G[..., a, e] = sum over positions s of x[s] x[s + (dh (a-kh+1), dw (e-kw+1))]^T over
    every pair inside the image, float64 (C, C, 2kh-1, 2kw-1). On a canvas with dh(kh-1) zero
    rows under and dw(kw-1) zero columns right of each image a shift is one flat offset that
    lands on a zero wherever it leaves the image, so each G is one product of two row
    ranges of the (B*Hz*Wz, C) canvas; G[-delta] = G[delta]^T."""
    b, c, h, w = x.shape
    hz, wz = h + geo.dh * (geo.kh - 1), w + geo.dw * (geo.kw - 1)
    canvas = x.new_zeros(b, hz, wz, c, dtype=dtype)
    canvas[:, :h, :w] = x.permute(0, 2, 3, 1)
    flat = canvas.view(-1, c)
    g = torch.zeros(c, c, 2 * geo.kh - 1, 2 * geo.kw - 1, dtype=torch.float64, device=x.device)
    for a in range(geo.kh):
        for e in range(0 if a == 0 else 1 - geo.kw, geo.kw):
            off = geo.dh * a * wz + geo.dw * e
            acc = torch.zeros(c, c, dtype=torch.float64, device=x.device)
            for start in range(0, len(flat) - off, CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, len(flat) - off)
                acc.add_(flat[start:stop].T @ flat[start + off : stop + off])
            g[:, :, geo.kh - 1 + a, geo.kw - 1 + e] = acc
            g[:, :, geo.kh - 1 - a, geo.kw - 1 - e] = acc.T
    return g


def _edge_products(
    geo: ConvGeometry, x: torch.Tensor, dtype: torch.dtype, rows: list[int], cols: list[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]]]:
    """The pairs of G whose first position is on an edge row (column; both), against every
    shift at once: float64 (C, C, 2kh-1, 2kw-1) per row, per column, per (row, column)."""
    b, c, h, w = x.shape
    mh, mw = geo.dh * (geo.kh - 1), geo.dw * (geo.kw - 1)
    padded = F.pad(x, (mw, mw, mh, mh)).to(dtype)  # (B, C, H + 2mh, W + 2mw)

    def products(first: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
        """first (N, C), shifted (N, C, nh, nw) -> (C, C, nh, nw), per CHUNK_ROWS."""
        flat = shifted.reshape(len(shifted), -1)
        out = torch.zeros(c, flat.shape[1], dtype=torch.float64, device=x.device)
        for start in range(0, len(first), CHUNK_ROWS):
            out.add_(first[start : start + CHUNK_ROWS].T @ flat[start : start + CHUNK_ROWS])
        return out.view(c, *shifted.shape[1:])

    row_sums, col_sums, corners = [], [], []
    for r in rows:  # row r against rows r-mh..r+mh, every column shift
        first = x[:, :, r, :].permute(0, 2, 1).reshape(-1, c).to(dtype)
        near = padded[:, :, r : r + 2 * mh + 1 : geo.dh, :].unfold(3, w, geo.dw)
        row_sums.append(products(first, near.permute(0, 4, 1, 2, 3).flatten(0, 1)))
        corners.append(
            [
                products(
                    x[:, :, r, col].to(dtype),
                    padded[:, :, r : r + 2 * mh + 1 : geo.dh, col : col + 2 * mw + 1 : geo.dw],
                )
                for col in cols
            ]
        )
    for col in cols:
        first = x[:, :, :, col].permute(0, 2, 1).reshape(-1, c).to(dtype)
        near = padded[:, :, :, col : col + 2 * mw + 1 : geo.dw].unfold(2, h, geo.dh)
        col_sums.append(products(first, near.permute(0, 4, 1, 2, 3).flatten(0, 1)))
    return row_sums, col_sums, corners


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
            x = args[0]
            dtype = torch.promote_types(torch.promote_types(x.dtype, precision), torch.float32)
            if shifts_pay(module, x):
                sums[name].add_(shifted_conv_products(module, x, dtype))
                return
            r = layer_inputs(module, x).to(dtype)
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
