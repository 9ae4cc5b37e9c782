"""The update store as a Zarr v3 group (`RUN/deltas.zarr`), readable by any zarr client.

    deltas.zarr/                       group attrs: format, version, layout, schedule,
                                       committed_steps, complete, model fingerprint
      updates/indices   (steps, K) uint32  flat parameter positions, delta + zstd
      updates/values    (steps, K) float16 | float32 | uint16 (bfloat16 bits)
      index/epoch           (steps,)   int32
      index/counts          (steps, layers) uint32  entries each row holds per layer (3)
      index/batch_offsets   (steps+1,) int64   CSR over index/batch_ids
      index/batch_ids       (total,)   uint32  sample ids in step order
      index/sample_offsets  (n+1,)     int64   CSR over index/sample_steps (on finalize)
      index/sample_steps    (total,)   uint32  steps of each sample, ascending

One row per step with every layer concatenated (the columns of layer l start at
its `column`; format 3 gives a layer `slots` columns, of which a row uses `counts`, the
rest holding MISSING_INDEX and NaN, which compress to almost nothing): two arrays
instead of two per layer keeps the file count small and lets one read fetch all layers
of a step. Each inner chunk holds one step and each shard ~8 MiB of indices
(`chunks.py`); whole shards are written, and scattered steps read, through
`shards.RowShards` (the same bytes zarr writes, without its per-chunk cost), and a
request fetches only the chunks of its steps. Commit protocol: data
first, then `committed_steps` in the group attributes; readers trust nothing above
it. LocalStore writes every key through a temporary file and a rename, so a kill
never leaves a torn chunk or attribute.

Integrity (format 2): every chunk of every array ends in a CRC-32C of its
compressed bytes (zarr's `crc32c` codec, checked by zarr on every read), and the
shard indexes carry their own. A flipped byte is a read error naming the steps,
never a silently different update. Format 1 stores (no checksums) still open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr

from unlearn_cli.errors import StoreError
from unlearn_cli.fileio import check_format
from unlearn_cli.location import zarr_store
from unlearn_cli.store import damage
from unlearn_cli.store.accounting import zarr_accounting
from unlearn_cli.store.base import (
    READABLE_VERSIONS,
    STORE_FORMAT,
    StepRows,
    StoreAccounting,
    StoreInfo,
    UpdateStore,
)
from unlearn_cli.store.chunks import array, attributes, checked_zstd, read
from unlearn_cli.store.damage import ChunkDamage
from unlearn_cli.store.index import SampleIndex
from unlearn_cli.store.layout import StoreLayout
from unlearn_cli.store.schema import UPDATE_ARRAYS, create_group, read_info
from unlearn_cli.store.shards import RowShards


class ZarrUpdateStore(UpdateStore):
    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.location = str(path)
        self._group = group
        self._index: SampleIndex | None = None
        self._info: StoreInfo | None = None
        self._direct: dict[str, RowShards | None] = {}

    # -- creation and opening ---------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        layout: StoreLayout,
        *,
        n_samples: int,
        planned_steps: int,
        model_fingerprint: str,
        schedule: dict,
        extra: dict[str, Any] | None = None,
    ) -> ZarrUpdateStore:
        """A new, empty store. `extra` attributes are kept and returned in `info().extra`."""
        about = {
            "schedule": schedule,
            "model_fingerprint": model_fingerprint,
            "n_samples": n_samples,
            "planned_steps": planned_steps,
            "extra": extra or {},
        }
        group = create_group(path, layout, about)
        return cls(path, group)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> ZarrUpdateStore:
        hint = "train with recording (the default) to create deltas.zarr"
        if not (path / "zarr.json").exists():
            raise StoreError(f"Update store not found: {path}.", hint=hint)
        try:
            group = zarr.open_group(
                store=zarr_store(path, read_only=not writable), mode="r+" if writable else "r"
            )
            attrs = dict(group.attrs)
        except Exception as exc:  # zarr raises many types for damaged metadata
            raise StoreError(
                f"Update store {path} cannot be opened: {exc}.",
                hint="restore deltas.zarr from a backup, or retrain with --force",
            ) from None
        check_format(
            attrs, STORE_FORMAT, READABLE_VERSIONS, f"Update store {path}", StoreError, hint
        )
        return cls(path, group)

    @property
    def checksummed(self) -> bool:
        """Whether every chunk carries a CRC-32C (format 2 and later)."""
        return int(attributes(self._group)["format_version"]) >= 2

    # -- writing ------------------------------------------------------------------
    def append(self, rows: StepRows) -> None:
        info = self.info()
        start, r = info.committed_steps, len(rows.epochs)
        g = self._group
        for name, data in zip(UPDATE_ARRAYS, (rows.indices, rows.values), strict=True):
            arr = array(g, f"updates/{name}")
            arr.resize((start + r, arr.shape[1]))
            direct = self._shards(name)
            if direct is not None and start % direct.shard_rows == 0:
                for at in range(0, r, direct.shard_rows):  # whole new shards, one object each
                    direct.write_shard(
                        (start + at) // direct.shard_rows, data[at : at + direct.shard_rows]
                    )
            else:  # rows that continue a written shard: zarr reads and rewrites it
                arr[start : start + r] = data
        sizes = np.array([len(b) for b in rows.batches], dtype=np.int64)
        offsets = array(g, "index/batch_offsets")
        base = int(read(offsets, slice(start, start + 1))[0])
        _append_1d(array(g, "index/epoch"), start, np.asarray(rows.epochs, np.int32))
        if self._has_counts:
            counts = array(g, "index/counts")
            counts.resize((start + r, counts.shape[1]))
            counts[start : start + r] = rows.layer_counts(info.layout)
        _append_1d(offsets, start + 1, base + np.cumsum(sizes))
        _append_1d(
            array(g, "index/batch_ids"), base, np.concatenate(rows.batches).astype(np.uint32)
        )
        # Commit: only now do the new rows exist for readers.
        g.attrs["committed_steps"] = start + r
        self._info = None
        self._index = None

    def finalize(self) -> None:
        index = self.index()
        g = self._group
        for name, data in (
            ("index/sample_offsets", index.sample_offsets),
            ("index/sample_steps", index.sample_steps),
        ):
            g.create_array(
                name,
                shape=data.shape,
                chunks=(max(1, min(len(data), 1 << 20)),),
                dtype=data.dtype,
                compressors=checked_zstd(),
                overwrite=True,
            )[:] = data
        g.attrs["complete"] = True
        self._info = None

    # -- reading ------------------------------------------------------------------
    def info(self) -> StoreInfo:
        if self._info is None:
            self._info = read_info(dict(self._group.attrs), self.path)
        return self._info

    def index(self) -> SampleIndex:
        if self._index is None:
            self._index = self._load_index()
        return self._index

    def _load_index(self) -> SampleIndex:
        info, g = self.info(), self._group
        c = info.committed_steps
        try:
            offsets = read(array(g, "index/batch_offsets"), slice(0, c + 1))
            epochs = read(array(g, "index/epoch"), slice(0, c))
            ids = read(array(g, "index/batch_ids"), slice(0, int(offsets[-1])))
            if info.complete and "sample_offsets" in cast(zarr.Group, g["index"]):
                return SampleIndex(
                    info.n_samples,
                    epochs,
                    offsets,
                    ids,
                    read(array(g, "index/sample_offsets"), slice(None)),
                    read(array(g, "index/sample_steps"), slice(None)),
                )
        except Exception as exc:
            raise StoreError(
                f"The sample index in {self.path} is damaged: {exc}.",
                hint="restore deltas.zarr from a backup, or retrain with --force",
            ) from None
        return SampleIndex.from_forward(info.n_samples, epochs, offsets, ids)

    @property
    def _has_counts(self) -> bool:
        return "counts" in cast(zarr.Group, self._group["index"])

    def kept_counts(self) -> np.ndarray:
        info = self.info()
        if not self._has_counts:  # before format 3 every row holds exactly k per layer
            k = np.array([ly.k for ly in info.layout.layers], np.uint32)
            return np.broadcast_to(k, (info.committed_steps, k.size))
        return read(array(self._group, "index/counts"), slice(0, info.committed_steps))

    def _shards(self, name: str) -> RowShards | None:
        """Direct shard access to `updates/<name>`, or None where zarr must do it."""
        if name not in self._direct:
            self._direct[name] = RowShards.of(array(self._group, f"updates/{name}"))
        return self._direct[name]

    @property
    def fetched_bytes(self) -> int:
        """Bytes of update rows fetched from storage so far (chunks and shard indexes)."""
        return sum(d.fetched_bytes for d in self._direct.values() if d is not None)

    def _read_raw(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._read_array("indices", steps), self._read_array("values", steps)

    def _read_array(self, name: str, steps: np.ndarray) -> np.ndarray:
        direct = self._shards(name)
        try:
            if direct is not None:
                return direct.read(steps)
            return np.asarray(
                array(self._group, f"updates/{name}").get_orthogonal_selection((steps, slice(None)))
            )
        except ChunkDamage as found:
            committed = self.info().committed_steps
            raise damage.damaged(self.path, name, found.rows, found.reason, committed) from None
        except Exception:  # zarr's read: a checksum or codec error; find the chunk
            info = self.info()
            arr = array(self._group, f"updates/{name}")
            per_chunk = info.extra["rows_per_chunk"]
            raise damage.locate(
                self.path, name, arr, steps, per_chunk, info.committed_steps
            ) from None

    def accounting(self) -> StoreAccounting:
        return zarr_accounting(self.path, self.info(), self._read_raw, self.checksummed)


def _append_1d(arr, start: int, data: np.ndarray) -> None:
    arr.resize((start + len(data),))
    arr[start : start + len(data)] = data
