"""The sample->batch index: which optimizer steps saw which sample ids.

Forward: per step its epoch and batch ids (CSR: `batch_offsets`, `batch_ids`).
Inverse: per sample id the steps that saw it (CSR: `sample_offsets`, `sample_steps`),
built with one stable argsort. Look-ups are vectorised: O(ids + hits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unlearn_cli.errors import RequestError


@dataclass(frozen=True)
class SampleIndex:
    n_samples: int
    epochs: np.ndarray  # (S,) int32, epoch of each step
    batch_offsets: np.ndarray  # (S + 1,) int64
    batch_ids: np.ndarray  # (total,) uint32, sample ids in step order
    sample_offsets: np.ndarray  # (n_samples + 1,) int64
    sample_steps: np.ndarray  # (total,) uint32, steps grouped by sample, ascending

    @property
    def steps(self) -> int:
        return len(self.epochs)

    @classmethod
    def from_forward(
        cls, n_samples: int, epochs: np.ndarray, batch_offsets: np.ndarray, batch_ids: np.ndarray
    ) -> SampleIndex:
        steps = len(epochs)
        sizes = np.diff(batch_offsets)
        step_of_entry = np.repeat(np.arange(steps, dtype=np.uint32), sizes)
        # Stable sort by sample id keeps each sample's steps in ascending order.
        order = np.argsort(batch_ids, kind="stable")
        counts = np.bincount(batch_ids, minlength=n_samples)
        sample_offsets = np.zeros(n_samples + 1, dtype=np.int64)
        np.cumsum(counts, out=sample_offsets[1:])
        return cls(
            n_samples,
            np.asarray(epochs, dtype=np.int32),
            np.asarray(batch_offsets, dtype=np.int64),
            np.asarray(batch_ids, dtype=np.uint32),
            sample_offsets,
            step_of_entry[order],
        )

    def batch(self, step: int) -> np.ndarray:
        return self.batch_ids[self.batch_offsets[step] : self.batch_offsets[step + 1]]

    def steps_touching(self, sample_ids: np.ndarray) -> np.ndarray:
        """Sorted unique steps whose batch held any of `sample_ids`."""
        ids = check_sample_ids(sample_ids, self.n_samples)
        starts = self.sample_offsets[ids]
        lengths = self.sample_offsets[ids + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        # Gather the ranges [start, start + length) of every id without a Python loop.
        shifts = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        hits = self.sample_steps[np.arange(total) + shifts]
        return np.unique(hits).astype(np.int64)


def check_sample_ids(sample_ids, n_samples: int) -> np.ndarray:
    """Validate ids as integers in [0, n_samples); returns int64 array."""
    ids = np.asarray(sample_ids)
    if ids.size == 0:
        return ids.astype(np.int64).reshape(-1)
    if not np.issubdtype(ids.dtype, np.integer):
        raise RequestError(f"Sample ids must be integers. Got dtype {ids.dtype} instead.")
    ids = ids.astype(np.int64).reshape(-1)
    if (ids < 0).any():
        raise RequestError(
            f"Sample id {int(ids[ids < 0][0])} is negative: sample ids are positions "
            f"0..{n_samples - 1} in the training split.",
            hint="remove the negative ids from the request",
        )
    bad = ids[ids >= n_samples]
    if bad.size:
        raise RequestError(
            f"Sample id {int(bad[0])} is out of range: the training split has ids "
            f"0..{n_samples - 1} ({bad.size} id(s) out of range).",
            hint="sample ids are positions in the training split",
        )
    return ids
