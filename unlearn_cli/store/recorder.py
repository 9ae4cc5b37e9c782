"""Record each optimizer step's update, pruned layer-wise, into an update store.

On the training thread: delta = theta_after - theta_before as one flat vector (each
parameter copied into its view of a flat buffer, in logical order whatever its layout:
with torch.cat of reshaped channels-last parameters, the copy took 3x as long on LeNet
and 20 ms per step on ResNet-9), then per tensor its largest |delta| (`selection.py`:
about k, within a tolerance, where a threshold is carried; exactly k otherwise and on a
GPU; no Python loop over entries). The kept entries go straight into the shard's rows,
whose unused columns hold the fill values (no per-step stacking; the buffers come back
from the writer once written), and a full shard is handed to a writer thread that
converts the values, compresses and commits them, so a shard is
written once and never rewritten, and training waits on disk only if the writer falls two
shards behind. (Pruning on the worker thread was measured
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
from unlearn_cli.store.base import MISSING_INDEX, StepRows, UpdateStore, encode_values
from unlearn_cli.store.selection import Selection, empty_rows, place, place_kept, prune_delta
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
        self._epochs: list[int] = []  # of the shard's rows so far
        self._batches: list[np.ndarray] = []
        # a dense record keeps every position: one shared row of them, not one per step
        self._positions = np.arange(flat.numel(), dtype=np.uint32) if self.layout.dense else None
        self._full_counts = np.array([ly.numel for ly in self.layout.layers], np.uint32)
        self._dense: list[torch.Tensor] = []
        self._selection = Selection(self.layout) if flat.device.type == "cpu" else None
        self._k = np.array([ly.k for ly in self.layout.layers], np.int64)  # topk's counts
        self._rows = empty_rows(self.layout, 0 if self.layout.dense else self.rows)
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._free: queue.Queue = queue.Queue()  # shard buffers the writer is done with
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
        """Select the ring's deltas into the shard's rows; hand over each full shard."""
        pending, self._pending = self._pending, []  # taken once, even if a write fails
        for delta, (epoch, ids) in zip(self._ring, pending, strict=False):
            if self._positions is not None:
                self._dense.append(delta.clone())
            elif self._selection is None:  # on a GPU: exactly k per tensor (topk there)
                idx, kept = prune_delta(delta, self.layout)
                row = tuple(a[len(self._epochs)] for a in self._rows)
                place(self.layout, self._k, idx.cpu().numpy(), kept.float().cpu().numpy(), row)
            else:
                flat = delta.numpy()
                row = tuple(a[len(self._epochs)] for a in self._rows)
                place_kept(self.layout, self._selection.kept(flat), flat, row)
            self._epochs.append(epoch)
            self._batches.append(ids)
            if len(self._epochs) >= self.rows:
                self._submit()

    def close(self, complete: bool) -> None:
        """Write what is buffered; with `complete`, mark the record finished."""
        self._select()
        if self._epochs:
            self._submit()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        if complete:
            self.store.finalize()

    def _submit(self) -> None:
        """Hand the shard's rows to the writer, which encodes the values and writes them."""
        self._raise_if_failed()
        r = len(self._epochs)
        if self._positions is not None:  # read-only, every row the same array
            idx = np.broadcast_to(self._positions, (r, self._positions.size))
            values = torch.stack(self._dense).numpy()
            counts = np.broadcast_to(self._full_counts, (r, self._full_counts.size))
            self._dense, buffers = [], None
        else:  # the buffers go to the writer and come back once written
            buffers = self._rows
            idx, values, counts = (a[:r] for a in buffers)
            self._rows = self._next_rows()
        epochs = np.array(self._epochs, np.int32)
        self._queue.put((idx, values, epochs, self._batches, counts, buffers))
        self._epochs, self._batches = [], []

    def _next_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A shard's buffers: one the writer has finished with, reset, or new ones (at
        most four sets exist: one filling, two queued, one being written). Fresh pages
        cost: new buffers took 7 ms per LeNet shard to fill, and then faulted in."""
        try:
            indices, values, counts = self._free.get_nowait()
        except queue.Empty:
            return empty_rows(self.layout, self.rows)
        indices.fill(MISSING_INDEX)
        values.fill(np.nan)
        return indices, values, counts

    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; the training thread will raise
            idx, values, epochs, batches, counts, buffers = item
            try:
                encoded = encode_values(torch.from_numpy(values), self.layout.value_dtype)
                self.store.append(StepRows(idx, encoded, epochs, batches, counts))
            except BaseException as exc:  # surfaced on the training thread
                self._error = exc
            if buffers is not None:
                self._free.put(buffers)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            exc = self._error
            hint = "free disk space and train again" if isinstance(exc, OSError) else None
            raise StoreError(f"Could not write the update store: {exc}", hint=hint) from exc
