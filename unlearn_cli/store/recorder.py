"""Record each optimizer step's update, pruned layer-wise, into an update store.

On the training thread: delta = theta_after - theta_before as one flat vector,
then per tensor the k largest |delta| (argpartition on the CPU, topk on a GPU; no
Python loop over entries). Rows are buffered a shard at a time and handed to a
writer thread that compresses and commits them, so a shard is written once and
never rewritten, and training waits on disk only if the writer falls two shards
behind. (Pruning on the worker thread was measured slower on a 2-core machine:
it competes with torch's own threads.)
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch
from torch import nn

from unlearn_cli.errors import StoreError
from unlearn_cli.store.base import StepRows, UpdateStore, encode_values
from unlearn_cli.store.layout import prune_delta
from unlearn_cli.training import StepInfo


def flat_params(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).float()


class Recorder:
    """An `on_step` hook for `training.fit` that writes pruned updates to a store."""

    def __init__(self, store: UpdateStore, params: list[nn.Parameter], rows_per_flush: int) -> None:
        self.store = store
        self.layout = store.layout
        self.params = params
        self.rows = rows_per_flush
        self.prev = flat_params(params)
        self._buffer: list[tuple[torch.Tensor, torch.Tensor, int, np.ndarray]] = []
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_loop, name="unlearn-recorder", daemon=True
        )
        self._thread.start()

    def on_step(self, info: StepInfo) -> None:
        now = flat_params(self.params)
        idx, values = prune_delta(now - self.prev, self.layout)
        self.prev = now
        self._buffer.append((idx, values, info.batch.epoch, info.batch.ids.numpy()))
        if len(self._buffer) >= self.rows:
            self._submit()

    def close(self, complete: bool) -> None:
        """Write what is buffered; with `complete`, mark the record finished."""
        if self._buffer:
            self._submit()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        if complete:
            self.store.finalize()

    def _submit(self) -> None:
        self._raise_if_failed()
        idx = torch.stack([b[0] for b in self._buffer]).cpu().numpy().astype(np.uint32)
        values = encode_values(torch.stack([b[1] for b in self._buffer]), self.layout.value_dtype)
        rows = StepRows(
            idx,
            values,
            np.array([b[2] for b in self._buffer], np.int32),
            [b[3] for b in self._buffer],
        )
        self._buffer = []
        self._queue.put(rows)

    def _write_loop(self) -> None:
        while (rows := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; the training thread will raise
            try:
                self.store.append(rows)
            except BaseException as exc:  # surfaced on the training thread
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            exc = self._error
            hint = "free disk space and train again" if isinstance(exc, OSError) else None
            raise StoreError(f"Could not write the update store: {exc}", hint=hint) from exc
