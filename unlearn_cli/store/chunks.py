"""Chunk geometry and codecs shared by every Zarr array the project writes.

The update arrays keep one step per inner chunk, so a request reads only the steps it
touches, and about 8 MiB of indices per shard (one object, written once by the
recorder). Older stores (attribute `rows_per_chunk` above 1) have ~1 MiB chunks of at
least 16 steps and 8 chunks per shard; they read the same way. Every chunk is
Blosc-zstd (byte shuffle) followed by a CRC-32C of the compressed bytes, checked on
every read.
"""

from __future__ import annotations

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


def attributes(group: zarr.Group) -> dict[str, Any]:
    return dict(group.attrs)
