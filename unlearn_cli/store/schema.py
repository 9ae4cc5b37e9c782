"""The Zarr store's schema: the arrays and attributes a new store is created with, and the
attributes read back as a `StoreInfo` (the layout in `zarr_store.py`'s docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from unlearn_cli.errors import StoreError
from unlearn_cli.location import zarr_store
from unlearn_cli.store.base import (
    BF16_NAN_BITS,
    MISSING_INDEX,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    StoreInfo,
    numpy_value_dtype,
)
from unlearn_cli.store.chunks import (
    INDEX_CHUNK,
    ROWS_PER_CHUNK,
    array,
    checked_zstd,
    delta_filter,
    rows_per_shard,
)
from unlearn_cli.store.layout import StoreLayout

UPDATE_ARRAYS = ("indices", "values")
INDEX_ARRAYS = (("index/epoch", "int32", 0), ("index/batch_offsets", "int64", 1))
DAMAGE_HINT = (
    "restore deltas.zarr from a backup (`unlearn verify RUN` lists every damaged chunk), "
    "or retrain with `unlearn train --force`"
)


def create_group(path: Path, layout: StoreLayout, about: dict[str, Any]) -> zarr.Group:
    """A new, empty store's group: its arrays, then its attributes in one write. `about`:
    n_samples, planned_steps, model_fingerprint, schedule and extra."""
    shard_rows = rows_per_shard(layout.row_width)
    group = zarr.open_group(store=zarr_store(path), mode="w")
    create_update_arrays(group, layout, shard_rows)
    for name, dtype, initial in (*INDEX_ARRAYS, ("index/batch_ids", "uint32", 0)):
        group.create_array(
            name, shape=(initial,), chunks=(INDEX_CHUNK,), dtype=dtype, compressors=checked_zstd()
        )
    layers = len(layout.layers)
    group.create_array(
        "index/counts",
        shape=(0, layers),
        chunks=(max(1, INDEX_CHUNK // layers), layers),
        dtype="uint32",
        compressors=checked_zstd(),
    )
    array(group, "index/batch_offsets")[0] = 0
    # One write of zarr.json, after the arrays exist (`attrs.update` would write once per
    # key, and a kill between them leaves half the attributes).
    bf16 = layout.value_dtype == "bfloat16"
    return group.update_attributes(
        {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "value_dtype": layout.value_dtype,
            "value_encoding": "uint16 bits of bfloat16" if bf16 else layout.value_dtype,
            "index_encoding": "flat position in the concatenation of the layers",
            "layers": layout.to_list(),
            **about,
            "rows_per_chunk": ROWS_PER_CHUNK,
            "rows_per_shard": shard_rows,
            "committed_steps": 0,
            "complete": False,
        }
    )


def create_update_arrays(group: zarr.Group, layout: StoreLayout, shard_rows: int) -> None:
    """`updates/indices` and `updates/values`: rows of K entries, one row per chunk,
    `shard_rows` per shard, checksummed."""
    k = layout.row_width
    value_fill = BF16_NAN_BITS if layout.value_dtype == "bfloat16" else np.nan
    for name, dtype, filters, fill in (
        ("indices", "uint32", [delta_filter("uint32")], MISSING_INDEX),
        ("values", numpy_value_dtype(layout.value_dtype), [], value_fill),
    ):
        group.create_array(
            f"updates/{name}",
            shape=(0, k),
            chunks=(ROWS_PER_CHUNK, k),
            shards=(shard_rows, k),
            dtype=dtype,
            filters=filters,
            compressors=checked_zstd(),
            fill_value=fill,
        )


def read_info(attrs: dict[str, Any], path: Path) -> StoreInfo:
    """The store's attributes as a StoreInfo; a StoreError naming what is missing."""
    try:
        layout = StoreLayout.from_list(attrs["layers"], attrs["value_dtype"])
        rows_per_chunk = int(attrs["rows_per_chunk"])
        return StoreInfo(
            layout,
            int(attrs["committed_steps"]),
            int(attrs["planned_steps"]),
            bool(attrs["complete"]),
            int(attrs["n_samples"]),
            attrs["model_fingerprint"],
            attrs["schedule"],
            {
                "rows_per_chunk": rows_per_chunk,
                # format 1 stores before `rows_per_shard`: 8 chunks per shard
                "rows_per_shard": int(attrs.get("rows_per_shard", 8 * rows_per_chunk)),
                **attrs.get("extra", {}),
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(
            f"Update store {path} has incomplete attributes (missing {exc}).", hint=DAMAGE_HINT
        ) from None
