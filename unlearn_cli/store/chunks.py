"""Chunk geometry and codecs shared by every Zarr array the project writes.

The update arrays keep one step per inner chunk, so a request reads only the steps it
touches, and about 8 MiB of indices per shard (one object, written once by the
recorder). Older stores (attribute `rows_per_chunk` above 1) have ~1 MiB chunks of at
least 16 steps and 8 chunks per shard; they read the same way. Every chunk is
Blosc-zstd (byte shuffle) followed by a CRC-32C of the compressed bytes, checked on
every read.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, cast

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

ZSTD_LEVEL = 1  # levels 3 and 5 cost 2x and 3x the CPU for 2-6% smaller updates
SHARD_BYTES = 8 << 20  # of indices: ~8 MiB raw, ~3 MiB on disk with values for LeNet
ROWS_PER_CHUNK = 1
MAX_ROWS_PER_SHARD = 4096
INDEX_CHUNK = 1 << 16

warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")


def delta_filter(dtype: str):
    from zarr.codecs.numcodecs import Delta

    return Delta(dtype=dtype)


def checked_zstd() -> list:
    """The bytes-to-bytes codecs of every array we write: Blosc-zstd with byte shuffle,
    then a CRC-32C of the compressed chunk that zarr verifies on every read."""
    return [BloscCodec(cname="zstd", clevel=ZSTD_LEVEL, shuffle="shuffle"), Crc32cCodec()]


def rows_per_shard(row_width: int) -> int:
    """Steps the recorder hands over at once: a whole shard, written once, never rewritten."""
    return int(min(MAX_ROWS_PER_SHARD, max(1, SHARD_BYTES // (4 * row_width))))


def array(group: zarr.Group, name: str) -> zarr.Array:
    """A named array of the group (typed: zarr's `group[name]` may be a group)."""
    return cast(zarr.Array, group[name])


def read(arr: zarr.Array, selection: slice) -> np.ndarray:
    return np.asarray(arr[selection])


def read_arrays(group: zarr.Group, selections: dict[str, slice], prefix: str = "") -> dict:
    """`{name: group[prefix + name][selection]}`, the arrays opened and read concurrently
    (one after another, each open and read waits on its own metadata and chunk fetches)."""
    from zarr.api import asynchronous
    from zarr.core.sync import sync

    base = f"{group.path}/{prefix}".lstrip("/")

    async def one(name: str, selection: slice) -> np.ndarray:
        arr = await asynchronous.open_array(store=group.store, path=base + name, mode="r")
        return np.asarray(await arr.getitem(selection))

    async def every() -> list[np.ndarray]:
        return await asyncio.gather(*(one(n, s) for n, s in selections.items()))

    return dict(zip(selections, sync(every()), strict=True))


def attributes(group: zarr.Group) -> dict[str, Any]:
    return dict(group.attrs)
