"""What a Zarr store occupies: exact bytes per array and the object count, and each
layer's share of the update bytes.

Rows concatenate every layer, so the compressed bytes cannot be attributed to a layer
exactly: the first rows (up to 32) are re-encoded layer by layer, chunk by chunk, with
the store's own codecs, and the totals are split in those proportions (estimated).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np

from unlearn_cli.location import file_sizes
from unlearn_cli.store.base import StoreAccounting, StoreInfo
from unlearn_cli.store.chunks import ZSTD_LEVEL

LAYER_SAMPLE_ROWS = 32  # rows re-encoded per layer to split the store's bytes by layer
RawReader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def zarr_accounting(
    path: Path, info: StoreInfo, read_raw: RawReader, checksummed: bool
) -> StoreAccounting:
    parts: dict[str, int] = {}
    found = file_sizes(path)
    for name, size in found.items():
        rel = name.split("/")
        key = "/".join(rel[:2]) if len(rel) > 2 else "metadata"
        parts[key] = parts.get(key, 0) + size
    shares = layer_shares(info, read_raw)
    layers = []
    idx_sum = sum(s[0] for s in shares) or 1
    val_sum = sum(s[1] for s in shares) or 1
    for si, sv in shares:
        layers.append(
            (
                round(parts.get("updates/indices", 0) * si / idx_sum),
                round(parts.get("updates/values", 0) * sv / val_sum),
            )
        )
    return StoreAccounting(parts, len(found), layers, True, checksummed)


def layer_shares(info: StoreInfo, read_raw: RawReader) -> list[tuple[int, int]]:
    """Per layer, (index, value) bytes of the first rows re-encoded layer by layer."""
    per_chunk = info.extra["rows_per_chunk"]
    steps = np.arange(min(info.committed_steps, max(per_chunk, LAYER_SAMPLE_ROWS)))
    if steps.size == 0:
        return [(0, 0) for _ in info.layout.layers]
    raw_idx, raw_val = read_raw(steps)
    blosc = numcodecs.Blosc(cname="zstd", clevel=ZSTD_LEVEL, shuffle=numcodecs.Blosc.SHUFFLE)
    delta = numcodecs.Delta(dtype="<u4")
    sizes = []
    for layer in info.layout.layers:
        cols = slice(layer.column, layer.column + layer.slots)
        idx_bytes = val_bytes = 0
        for at in range(0, len(steps), per_chunk):  # chunk by chunk, as stored
            block = slice(at, at + per_chunk)
            idx_bytes += len(blosc.encode(delta.encode(np.ascontiguousarray(raw_idx[block, cols]))))
            val_bytes += len(blosc.encode(np.ascontiguousarray(raw_val[block, cols])))
        sizes.append((idx_bytes, val_bytes))
    return sizes
