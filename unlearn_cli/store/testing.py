"""The contract every `UpdateStore` implementation must hold to.

Subclass `StoreContract` in a test module and implement `make_store`; pytest
collects the inherited tests (name the subclass `Test...`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_cli.errors import RequestError, StoreError
from unlearn_cli.store.base import StepRows, UpdateStore, encode_values
from unlearn_cli.store.layout import LayerLayout, StoreLayout


def toy_layout(value_dtype: str = "float32") -> StoreLayout:
    """Two tensors: 'a' (4x5, keeps 3) and 'b' (7, keeps 2)."""
    return StoreLayout(
        (
            LayerLayout("a", (4, 5), 20, 0.15, 3, 0, 0),
            LayerLayout("b", (7,), 7, 0.3, 2, 20, 3),
        ),
        value_dtype,
    )


def toy_rows(layout: StoreLayout, steps: int, n_samples: int, seed: int = 0) -> StepRows:
    """Random valid rows: sorted per-layer positions, values, batches of 4 ids."""
    rng = np.random.default_rng(seed)
    indices = np.stack(
        [
            np.concatenate(
                [np.sort(rng.permutation(ly.numel)[: ly.k]) + ly.offset for ly in layout.layers]
            )
            for _ in range(steps)
        ]
    ).astype(np.uint32)
    values = torch.from_numpy(rng.normal(size=indices.shape).astype(np.float32))
    batches = [rng.choice(n_samples, size=4, replace=False).astype(np.uint32) for _ in range(steps)]
    return StepRows(
        indices,
        encode_values(values, layout.value_dtype),
        np.arange(steps, dtype=np.int32) // 5,
        batches,
    )


class StoreContract:
    n_samples = 30

    def make_store(self, layout: StoreLayout, n_samples: int, planned_steps: int) -> UpdateStore:
        raise NotImplementedError

    def filled(self, steps: int = 12, value_dtype: str = "float32") -> tuple[UpdateStore, StepRows]:
        layout = toy_layout(value_dtype)
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
        from unlearn_cli.store.base import decode_values

        expected = decode_values(rows.values[steps], value_dtype)
        torch.testing.assert_close(values, expected, rtol=0, atol=0)

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
    return StepRows(rows.indices[a:b], rows.values[a:b], rows.epochs[a:b], rows.batches[a:b])
