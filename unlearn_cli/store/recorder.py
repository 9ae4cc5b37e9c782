"""Record each optimizer step's update, pruned layer-wise, into an update store.

On the training thread: delta = theta_after - theta_before as one flat vector (each
parameter copied into its view of a flat buffer, in logical order whatever its layout:
with torch.cat of reshaped channels-last parameters, the copy took 3x as long on LeNet
and 20 ms per step on ResNet-9), then per tensor the k largest |delta| (a sampled
threshold and an exact trim on the CPU, topk on a GPU; no Python loop over entries).
Rows are buffered a shard at a time and handed to a writer thread that compresses and
commits them, so a shard is written once and never rewritten, and training waits on disk
only if the writer falls two shards behind. (Pruning on the worker thread was measured
slower on a 2-core machine: it competes with torch's own threads.)

On the CPU each step only writes its delta into a block of up to 32 rows (at most
RING_BYTES); the selection runs when the block is full, one row after another. Right
after a training step the caches hold activations, and the same selection took longer
(LeNet: 0.64-0.84 ms per step against 0.47-0.62 ms in blocks; `bench_store.py` compares).
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

RING_BYTES = 16 << 20  # deltas held on the CPU before their selection
RING_ROWS = 32


def flat_params(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).float()


def param_views(flat: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Views of `flat`, one per parameter in its shape (contiguous, whatever the parameter's
    own layout): copying a parameter into its view writes it in logical order."""
    views, offset = [], 0
    for p in params:
        views.append(flat[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()
    return views


def ring_rows(numel: int, device: torch.device, rows_per_flush: int) -> int:
    """Deltas held before selection: a block on the CPU, one step on a GPU (topk there)."""
    if device.type != "cpu":
        return 1
    return max(1, min(RING_ROWS, rows_per_flush, RING_BYTES // (4 * max(1, numel))))


class Recorder:
    """An `on_step` hook for `training.fit` that writes pruned updates to a store."""

    def __init__(self, store: UpdateStore, params: list[nn.Parameter], rows_per_flush: int) -> None:
        self.store = store
        self.layout = store.layout
        self.params = params
        self.rows = rows_per_flush
        flat = flat_params(params)
        self._params = [flat, torch.empty_like(flat)]  # the last step's and this step's
        self._views = [param_views(buf, params) for buf in self._params]
        self._ring = torch.empty(
            (ring_rows(flat.numel(), flat.device, rows_per_flush), flat.numel()),
            device=flat.device,
        )
        self._pending: list[tuple[int, np.ndarray]] = []  # (epoch, ids) of the ring's rows
        self._buffer: list[tuple[torch.Tensor | None, torch.Tensor, int, np.ndarray]] = []
        # a dense record keeps every position: one shared row of them, not one per step
        self._positions = np.arange(flat.numel(), dtype=np.uint32) if self.layout.dense else None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_loop, name="unlearn-recorder", daemon=True
        )
        self._thread.start()

    def on_step(self, info: StepInfo) -> None:
        last, now = self._params
        with torch.no_grad():  # one copy per parameter into its view: no temporaries
            for view, p in zip(self._views[1], self.params, strict=True):
                view.copy_(p)
        torch.sub(now, last, out=self._ring[len(self._pending)])
        self._params.reverse()
        self._views.reverse()
        self._pending.append((info.batch.epoch, info.batch.ids.numpy()))
        if len(self._pending) == len(self._ring):
            self._select()

    def _select(self) -> None:
        """Prune the ring's deltas into rows; hand over each full shard."""
        pending, self._pending = self._pending, []  # taken once, even if a write fails
        for delta, (epoch, ids) in zip(self._ring, pending, strict=False):
            if self._positions is not None:
                self._buffer.append((None, delta.clone(), epoch, ids))
            else:
                self._buffer.append((*prune_delta(delta, self.layout), epoch, ids))
            if len(self._buffer) >= self.rows:
                self._submit()

    def close(self, complete: bool) -> None:
        """Write what is buffered; with `complete`, mark the record finished."""
        self._select()
        if self._buffer:
            self._submit()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        if complete:
            self.store.finalize()

    def _submit(self) -> None:
        self._raise_if_failed()
        if self._positions is not None:  # read-only, every row the same array
            idx = np.broadcast_to(self._positions, (len(self._buffer), self._positions.size))
        else:
            rows_idx = [b[0] for b in self._buffer if b[0] is not None]
            idx = torch.stack(rows_idx).cpu().numpy().astype(np.uint32)
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
