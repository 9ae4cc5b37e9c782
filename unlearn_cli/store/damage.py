"""Where a failed read of the update rows went wrong: the error names the chunk's steps.

`RowShards` reports the rows of a chunk whose checksum or codec failed (`ChunkDamage`);
a read through zarr fails as a whole, so the chunks of the request are read one by one
until one fails. Both end in the same message, which `unlearn verify` lists per chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from unlearn_cli.errors import StoreError
from unlearn_cli.store.schema import DAMAGE_HINT


class ChunkDamage(Exception):
    """Chunks that failed their checksum or could not be decoded: `rows` are the first
    and last row of each, `reason` says why (the store turns it into a StoreError)."""

    def __init__(self, rows: list[tuple[int, int]], reason: str) -> None:
        super().__init__(reason)
        self.rows = rows
        self.reason = reason


def damaged(
    path: Path, name: str, rows: list[tuple[int, int]], reason: str, committed: int
) -> StoreError:
    """The error for damaged chunks of `updates/<name>`, given as (first, last) steps."""
    first, last = rows[0]
    where = f"step {first}" if first == last else f"steps {first}..{min(last, committed - 1)}"
    more = f"; {len(rows) - 1} more damaged chunks" if len(rows) > 1 else ""
    return StoreError(
        f"Update store {path} is corrupt: the chunk of updates/{name} holding "
        f"{where} (every layer) cannot be read ({reason}{more})",
        hint=DAMAGE_HINT,
    )


def locate(
    path: Path, name: str, arr: zarr.Array, steps: np.ndarray, per_chunk: int, committed: int
) -> StoreError:
    """The error for a failed zarr read of `steps` from `updates/<name>` (`arr`), naming
    the first damaged chunk."""
    for chunk in np.unique(steps // per_chunk):
        first = int(chunk) * per_chunk
        last = min(first + per_chunk, committed) - 1
        try:
            arr[first : last + 1]
        except Exception as exc:
            return damaged(path, name, [(first, last)], str(exc), committed)
    return StoreError(f"Update store {path} could not be read.", hint=DAMAGE_HINT)
