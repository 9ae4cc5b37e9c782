"""Both update store implementations against the shipped contract."""

import pytest

from unlearn_cli.store import MemoryUpdateStore, ZarrUpdateStore
from unlearn_cli.store.testing import StoreContract


class TestMemoryStore(StoreContract):
    def make_store(self, layout, n_samples, planned_steps):
        return MemoryUpdateStore(layout, n_samples=n_samples, planned_steps=planned_steps)


class TestZarrStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path

    def make_store(self, layout, n_samples, planned_steps):
        path = self.tmp / f"deltas-{len(list(self.tmp.iterdir()))}.zarr"
        return ZarrUpdateStore.create(
            path,
            layout,
            n_samples=n_samples,
            planned_steps=planned_steps,
            model_fingerprint="test",
            schedule={"kind": "uniform", "keep": 0.1},
        )

    def test_reopened_store_reads_the_same(self):
        store, rows = self.filled()
        again = ZarrUpdateStore.open(store.path)
        assert again.info().committed_steps == 12
        indices, _ = again.read_rows([3])
        assert (indices[0] == rows.indices[3]).all()
