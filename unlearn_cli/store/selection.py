"""Which entries of a step's update a record keeps, per tensor: the exact top-k, or the
largest entries up to a tolerance on their count (store format 3).

`Selection.kept` (the recorder's) keeps, for each tensor that `layout.carries` (more
than CARRY_MIN_SIZE entries and a k of at least 1 / TOLERANCE), every entry with
|delta| >= t, where t is a threshold carried from step to step. So a row holds the m
largest |delta| of the tensor, ties at the smallest included, for some m with
k * (1 - TOLERANCE) <= m <= k * (1 + TOLERANCE): every kept entry is at least as large
as every dropped one. Each REFRESH-th step, and whenever the count falls below the band,
the exact top-k runs and sets t to its smallest |delta|; a count above the band is
trimmed to the exact top-k of its candidates; in between, t follows the count
(t <- t * (m / k) ** FOLLOW). Smaller tensors keep exactly k. NaN ranks above every
number, as topk ranks it. On real updates this took 0.75x the time of an exact top-k at
every step and held 99% of its squared magnitude (`benchmarks/bench_selection.py`). On
a GPU each tensor keeps exactly k (topk there).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from unlearn_cli.store.base import MISSING_INDEX
from unlearn_cli.store.layout import LayerLayout, StoreLayout

REFRESH = 8  # steps between exact selections that reset the carried thresholds
FOLLOW = 0.5  # exponent of the count's correction of the threshold between them


def magnitudes(flat: np.ndarray) -> np.ndarray:
    """|delta|, with NaN (a diverged update) ranked above every number, as topk ranks it."""
    magnitude = np.abs(flat)
    if np.isnan(magnitude.max()):
        magnitude = np.nan_to_num(magnitude, nan=np.inf)
    return magnitude


def empty_rows(layout: StoreLayout, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` rows to fill: indices and float32 values (every column unused), and counts."""
    shape = (n, layout.row_width)
    return (
        np.full(shape, MISSING_INDEX, np.uint32),
        np.full(shape, np.nan, np.float32),
        np.zeros((n, len(layout.layers)), np.uint32),
    )


def place(
    layout: StoreLayout,
    sizes: np.ndarray,
    positions: np.ndarray,
    values: np.ndarray,
    row: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Write one step's kept entries into `row` (one row of `empty_rows`' arrays):
    `positions` and `values` hold every tensor's entries one tensor after another,
    `sizes[l]` of tensor l. One contiguous copy per run of layers (`layout.runs`), not
    one per layer (LeNet: 10 layers, 3 runs; one scatter of every entry took about
    twice as long)."""
    indices, vals, counts = row
    counts[:] = sizes
    ends = np.cumsum(sizes)
    for first, last in layout.runs:
        start, stop = int(ends[first] - sizes[first]), int(ends[last])
        at = int(layout.columns[first])
        indices[at : at + stop - start] = positions[start:stop]
        vals[at : at + stop - start] = values[start:stop]


def place_kept(
    layout: StoreLayout,
    kept: list[np.ndarray],
    flat: np.ndarray,
    row: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """`place` each tensor's kept local positions (`Selection.kept`), with their values
    from the step's flat update."""
    sizes = np.fromiter((a.size for a in kept), np.int64, len(kept))
    positions = np.concatenate(kept) + np.repeat(layout.offsets, sizes)
    place(layout, sizes, positions, flat[positions], row)


def select_rows(
    layout: StoreLayout, deltas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of consecutive steps' flat float32 updates, selected as the recorder does."""
    selection = Selection(layout)
    rows = empty_rows(layout, len(deltas))
    for r, flat in enumerate(deltas):
        place_kept(layout, selection.kept(flat), flat, tuple(a[r] for a in rows))
    return rows


class Selection:
    """Per step, each tensor's kept positions (local, ascending); the state it carries
    from step to step is one threshold per tensor."""

    def __init__(self, layout: StoreLayout, refresh: int = REFRESH) -> None:
        self.layout = layout
        self.refresh = refresh
        self.thresholds = np.zeros(len(layout.layers))
        self.steps = 0

    def kept(self, flat: np.ndarray) -> list[np.ndarray]:
        """Kept local positions per tensor for one step's flat float32 update."""
        magnitude = magnitudes(flat)
        refresh = self.steps % self.refresh == 0
        self.steps += 1
        out = []
        for i, layer in enumerate(self.layout.layers):
            seg = magnitude[layer.offset : layer.offset + layer.numel]
            if layer.k == layer.numel:
                out.append(np.arange(layer.numel))
            elif not layer.variable:
                out.append(top_k_positions(seg, layer.k))
            else:
                out.append(self._carried(i, seg, layer, refresh))
        return out

    def _carried(self, i: int, seg: np.ndarray, layer: LayerLayout, refresh: bool) -> np.ndarray:
        k, t = layer.k, self.thresholds[i]
        if not refresh and 0 < t < np.inf:
            candidates = np.flatnonzero(seg >= t)
            m = candidates.size
            if m >= layer.least:
                if m > layer.slots:  # too many: the exact top-k of the candidates
                    candidates = candidates[_top_k_mask(seg[candidates], k)]
                self.thresholds[i] = t * (m / k) ** FOLLOW
                return candidates
        local = top_k_positions(seg, k)
        self.thresholds[i] = seg[local].min()
        return local


def prune_delta(delta: torch.Tensor, layout: StoreLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each tensor's exactly k largest |delta|: (sorted flat indices, values), the
    tensors' k entries one after another (whatever the layout's slots)."""
    if layout.dense:
        idx = torch.arange(delta.numel(), device=delta.device)
        return idx, delta.clone()
    if delta.device.type == "cpu":  # a partition is ~4x faster than topk on the CPU
        return _prune_numpy(delta, layout)
    parts = []
    for layer in layout.layers:
        seg = delta[layer.offset : layer.offset + layer.numel]
        if layer.k == layer.numel:
            local = torch.arange(layer.numel, device=delta.device)
        else:
            local = torch.topk(seg.abs(), layer.k, sorted=False).indices.sort().values
        parts.append(local + layer.offset)
    idx = torch.cat(parts)
    return idx, delta[idx]


def _prune_numpy(delta: torch.Tensor, layout: StoreLayout) -> tuple[torch.Tensor, torch.Tensor]:
    flat = delta.detach().numpy()
    magnitude = magnitudes(flat)
    parts = []
    for layer in layout.layers:
        n, k = layer.numel, layer.k
        if k == n:
            local = np.arange(n)
        else:
            local = top_k_positions(magnitude[layer.offset : layer.offset + n], k)
        parts.append(local + layer.offset)
    idx = np.concatenate(parts)
    return torch.from_numpy(idx), torch.from_numpy(flat[idx])


SELECTION_SAMPLE = 1024  # entries of a tensor sampled to guess the k-th largest |delta|
SMALL_TENSOR = 256  # stable argsort below; above, a partition (LeNet 840: 11 us against 22)


def top_k_positions(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Ascending positions of the k largest entries of `magnitude` (no NaN: the caller
    maps NaN to inf); ties at the k-th value are broken by position (lowest first), so
    the result is exactly a top-k and deterministic.

    For a large tensor keeping a small share, a sample of fixed random positions guesses
    a threshold a little below the k-th value; only the entries above it (about 1.1 k)
    are then partitioned exactly. If the guess leaves fewer than k above it, the next
    guess leaves twice as many sample entries above it, and so on; only when even the
    whole sample is too few does the full partition run. 2.4x faster than argpartition
    + sort on LeNet's 48,000-entry layer. (A strided sample aliases with image rows: on
    an MLP's first layer it read the same always-zero pixels of every row and the guess
    failed every step. With random positions, updates concentrated in a few hidden units
    still failed the first guess on about 1 step in 6 of an MLP's first layer, where the
    full partition took 1.6 ms against 0.15 ms.)
    """
    n = magnitude.size
    if 4 * k >= n or n < 4 * SELECTION_SAMPLE:
        return _top_k_exact(magnitude, k)
    sample = np.sort(magnitude[_sample_positions(n)])
    m = sample.size
    above = min(m, int(m * k / n * 1.1) + 8)  # sample entries left above the guess
    while True:
        candidates = np.flatnonzero(magnitude >= sample[m - above])
        if candidates.size >= k:  # every entry of the top k, ties included, is a candidate
            return candidates[_top_k_mask(magnitude[candidates], k)]
        if above == m:
            return _top_k_exact(magnitude, k)
        above = min(m, 2 * above)


@functools.lru_cache(maxsize=256)
def _sample_positions(n: int) -> np.ndarray:
    """SELECTION_SAMPLE distinct positions of 0..n-1, the same for every call with n."""
    rng = np.random.default_rng(n)
    return np.sort(rng.choice(n, SELECTION_SAMPLE, replace=False))


def _top_k_exact(magnitude: np.ndarray, k: int) -> np.ndarray:
    if magnitude.size <= SMALL_TENSOR:  # one stable sort: fewer calls for biases
        return np.sort(np.argsort(-magnitude, kind="stable")[:k])
    return np.flatnonzero(_top_k_mask(magnitude, k))


def _top_k_mask(magnitude: np.ndarray, k: int) -> np.ndarray:
    """A mask of the k largest entries, ties at the k-th value taken by position."""
    n = magnitude.size
    kth = np.partition(magnitude, n - k)[n - k]
    keep = magnitude > kth
    need = k - int(np.count_nonzero(keep))
    if need:
        keep[np.flatnonzero(magnitude == kth)[:need]] = True
    return keep
