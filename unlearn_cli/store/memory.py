"""An in-memory update store for tests; holds to the same contract as the Zarr one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from unlearn_cli.store.base import (
    StepRows,
    StoreAccounting,
    StoreInfo,
    UpdateStore,
    numpy_value_dtype,
)
from unlearn_cli.store.index import SampleIndex
from unlearn_cli.store.layout import StoreLayout


class MemoryUpdateStore(UpdateStore):
    def __init__(
        self,
        layout: StoreLayout,
        *,
        n_samples: int,
        planned_steps: int,
        model_fingerprint: str = "",
        schedule: dict | None = None,
    ) -> None:
        self._info = StoreInfo(
            layout, 0, planned_steps, False, n_samples, model_fingerprint, schedule or {}
        )
        self._indices: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._epochs: list[int] = []
        self._batches: list[np.ndarray] = []
        self._index: SampleIndex | None = None

    def append(self, rows: StepRows) -> None:
        self._indices.extend(rows.indices.copy())
        self._values.extend(rows.values.copy())
        self._epochs.extend(int(e) for e in rows.epochs)
        self._batches.extend(np.asarray(b, dtype=np.uint32) for b in rows.batches)
        self._set(committed_steps=len(self._epochs))
        self._index = None

    def finalize(self) -> None:
        self._set(complete=True)

    def _set(self, **changes) -> None:
        self._info = replace(self._info, **changes)

    def info(self) -> StoreInfo:
        return self._info

    def index(self) -> SampleIndex:
        if self._index is None:
            sizes = [len(b) for b in self._batches]
            offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            ids = np.concatenate(self._batches) if self._batches else np.empty(0, np.uint32)
            self._index = SampleIndex.from_forward(
                self._info.n_samples, np.array(self._epochs, np.int32), offsets, ids
            )
        return self._index

    @property
    def _value_dtype(self) -> np.dtype:
        return numpy_value_dtype(self._info.layout.value_dtype)

    def _read_raw(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self._info.layout.row_width
        if steps.size == 0:
            return np.empty((0, k), np.uint32), np.empty((0, k), self._value_dtype)
        return (
            np.stack([self._indices[s] for s in steps]),
            np.stack([self._values[s] for s in steps]),
        )

    def accounting(self) -> StoreAccounting:
        """Bytes held in memory, uncompressed: each layer's exactly."""
        steps = len(self._epochs)
        value_size = self._value_dtype.itemsize
        layers = [
            (4 * ly.slots * steps, value_size * ly.slots * steps) for ly in self.layout.layers
        ]
        index = self.index()
        parts = {
            "updates/indices": sum(a.nbytes for a in self._indices),
            "updates/values": sum(a.nbytes for a in self._values),
            "index/epoch": index.epochs.nbytes,
            "index/batch_offsets": index.batch_offsets.nbytes,
            "index/batch_ids": index.batch_ids.nbytes,
        }
        return StoreAccounting(parts, 0, layers, layers_estimated=False, checksummed=False)
