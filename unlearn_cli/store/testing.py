"""The contract every `UpdateStore` implementation must hold to.

Subclass `StoreContract` in a test module and implement `make_store`; pytest
collects the inherited tests (name the subclass `Test...`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_cli.errors import RequestError, StoreError
from unlearn_cli.store.base import (
    MISSING_INDEX,
    StepRows,
    UpdateStore,
    decode_values,
    encode_values,
)
from unlearn_cli.store.layout import LayerLayout, StoreLayout


def toy_layout(value_dtype: str = "float32", variable: bool = False) -> StoreLayout:
    """Two tensors: 'a' (4x5, keeps 3) and 'b' (7, keeps 2). `variable`: 'a' keeps 2 to 5
    entries per row (format 3), in 5 columns."""
    a_slots, a_least = (5, 2) if variable else (3, 3)
    return StoreLayout(
        (
            LayerLayout("a", (4, 5), 20, 0.15, 3, 0, 0, a_slots, a_least),
            LayerLayout("b", (7,), 7, 0.3, 2, 20, a_slots),
        ),
        value_dtype,
    )


def toy_rows(layout: StoreLayout, steps: int, n_samples: int, seed: int = 0) -> StepRows:
    """Random valid rows: per layer a count within its bounds, sorted positions, then
    unused columns; values; batches of 4 ids."""
    rng = np.random.default_rng(seed)
    indices = np.full((steps, layout.row_width), MISSING_INDEX, np.uint32)
    values = np.full((steps, layout.row_width), np.nan, np.float32)
    counts = np.zeros((steps, len(layout.layers)), np.uint32)
    for r in range(steps):
        for i, ly in enumerate(layout.layers):
            m = int(rng.integers(ly.least, ly.slots + 1))
            cols = slice(ly.column, ly.column + m)
            indices[r, cols] = np.sort(rng.permutation(ly.numel)[:m]) + ly.offset
            values[r, cols] = rng.normal(size=m)
            counts[r, i] = m
    batches = [rng.choice(n_samples, size=4, replace=False).astype(np.uint32) for _ in range(steps)]
    return StepRows(
        indices,
        encode_values(torch.from_numpy(values), layout.value_dtype),
        np.arange(steps, dtype=np.int32) // 5,
        batches,
        counts,
    )


class StoreContract:
    n_samples = 30

    def make_store(self, layout: StoreLayout, n_samples: int, planned_steps: int) -> UpdateStore:
        raise NotImplementedError

    def filled(
        self, steps: int = 12, value_dtype: str = "float32", variable: bool = False
    ) -> tuple[UpdateStore, StepRows]:
        layout = toy_layout(value_dtype, variable)
        store = self.make_store(layout, self.n_samples, steps)
        rows = toy_rows(layout, steps, self.n_samples)
        half = steps // 2
        store.append(_slice(rows, 0, half))
        store.append(_slice(rows, half, steps))
        return store, rows

    def test_new_store_is_empty(self):
        store = self.make_store(toy_layout(), self.n_samples, 5)
        info = store.info()
        assert info.committed_steps == 0 and not info.complete and info.planned_steps == 5
        assert store.steps_touching([0, 1]).size == 0

    @pytest.mark.parametrize("value_dtype", ["float16", "bfloat16", "float32"])
    def test_rows_round_trip(self, value_dtype):
        store, rows = self.filled(value_dtype=value_dtype)
        assert store.info().committed_steps == 12
        steps = np.array([7, 0, 11, 3])
        indices, values = store.read_rows(steps)
        np.testing.assert_array_equal(indices, rows.indices[steps])
        expected = decode_values(rows.values[steps], value_dtype)
        torch.testing.assert_close(values, expected, rtol=0, atol=0)

    @pytest.mark.parametrize("value_dtype", ["float16", "bfloat16"])
    def test_rows_of_variable_counts_round_trip(self, value_dtype):
        """Format 3: each row's own count per layer, unused columns read as
        MISSING_INDEX and 0, and sums, counts and exports keep to the used ones."""
        store, rows = self.filled(value_dtype=value_dtype, variable=True)
        assert len(set(rows.counts[:, 0].tolist())) > 1  # the counts do vary
        steps = np.array([7, 0, 11, 3])
        indices, values = store.read_rows(steps)
        np.testing.assert_array_equal(indices, rows.indices[steps])
        used = rows.indices[steps] != MISSING_INDEX
        mask = torch.from_numpy(used)
        expected = decode_values(rows.values[steps], value_dtype)
        assert (values[~mask] == 0).all()
        torch.testing.assert_close(values[mask], expected[mask], rtol=0, atol=0)
        np.testing.assert_array_equal(store.kept_counts(), rows.counts)
        total, _ = store.sum_updates(steps)
        want = torch.zeros(store.layout.num_params)
        want.index_add_(
            0, torch.from_numpy(rows.indices[steps][used].astype(np.int64)), expected[mask]
        )
        torch.testing.assert_close(total, want)
        exported = store.export_rows(steps[np.argsort(steps)])
        np.testing.assert_array_equal(exported.counts, rows.counts[np.sort(steps)])

    def test_a_row_below_its_least_count_is_corrupt(self):
        """A row holding fewer entries of a layer than its `least` (what a missing chunk
        reads as) is refused, naming the step and the layer."""
        layout = toy_layout(variable=True)
        store = self.make_store(layout, self.n_samples, 3)
        rows = toy_rows(layout, 3, self.n_samples)
        rows.indices[1, 1:5] = MISSING_INDEX  # 'a' keeps 1 entry; at least 2 are required
        store.append(rows)
        with pytest.raises(StoreError, match="corrupt at step 1, layer 'a'"):
            store.read_rows([0, 1])
        store.read_rows([0, 2])

    def test_uncommitted_rows_are_refused(self):
        store, _ = self.filled()
        with pytest.raises(StoreError, match="not in the update store"):
            store.read_rows([12])

    def test_steps_touching_matches_brute_force(self):
        store, rows = self.filled()
        ids = np.array([0, 5, 17, 29])
        expected = sorted({s for s, b in enumerate(rows.batches) if np.isin(b, ids).any()})
        np.testing.assert_array_equal(store.steps_touching(ids), expected)
        for sid in range(self.n_samples):
            want = [s for s, b in enumerate(rows.batches) if sid in b]
            np.testing.assert_array_equal(store.steps_touching([sid]), want)

    def test_index_survives_finalize(self):
        store, rows = self.filled()
        before = store.steps_touching(np.arange(10))
        store.finalize()
        assert store.info().complete
        np.testing.assert_array_equal(store.steps_touching(np.arange(10)), before)
        for step in (0, 5, 11):
            np.testing.assert_array_equal(store.index().batch(step), rows.batches[step])
        np.testing.assert_array_equal(store.index().epochs, rows.epochs)

    def test_out_of_range_ids_are_refused(self):
        store, _ = self.filled()
        with pytest.raises(RequestError, match="out of range"):
            store.steps_touching([self.n_samples])
        with pytest.raises(RequestError, match="negative"):
            store.steps_touching([-1])

    def test_sum_updates_adds_rows(self):
        store, rows = self.filled()
        steps = [1, 4, 9]
        total, nbytes = store.sum_updates(steps)
        expected = torch.zeros(store.layout.num_params)
        for s in steps:
            expected.index_add_(
                0,
                torch.from_numpy(rows.indices[s].astype(np.int64)),
                torch.from_numpy(rows.values[s]),
            )
        torch.testing.assert_close(total, expected)
        assert nbytes > 0

    def test_accounting_splits_the_update_bytes_by_layer(self):
        empty = self.make_store(toy_layout(), self.n_samples, 12).accounting()
        assert sum(i + v for i, v in empty.layers) == 0  # no rows yet
        store, _ = self.filled()
        accounting = store.accounting()
        assert len(accounting.layers) == len(store.layout.layers)
        assert accounting.update_bytes > 0 and accounting.total_bytes >= accounting.update_bytes
        split = sum(i + v for i, v in accounting.layers)  # rounded per layer
        assert abs(split - accounting.update_bytes) <= len(accounting.layers)


def _slice(rows: StepRows, a: int, b: int) -> StepRows:
    counts = None if rows.counts is None else rows.counts[a:b]
    return StepRows(
        rows.indices[a:b], rows.values[a:b], rows.epochs[a:b], rows.batches[a:b], counts
    )
