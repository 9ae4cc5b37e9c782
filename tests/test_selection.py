"""The record's selection within its tolerance (store format 3), against a brute-force
top-k; its rows on disk; and stores of the earlier formats."""

import json

import numpy as np
import pytest
import torch
import zarr

from unlearn_cli.data import load_dataset
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.storage_report import storage_report
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.ops.verify import verify_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store import KeepSchedule, MemoryUpdateStore, ZarrUpdateStore, make_layout
from unlearn_cli.store import layout as layout_module
from unlearn_cli.store.base import MISSING_INDEX
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.store.selection import REFRESH, Selection, magnitudes
from unlearn_cli.train_config import TrainConfig, make_optimizer
from unlearn_cli.training import Batch, Hooks, StepInfo, epoch_batches, fit


def brute_force_top_k(magnitude: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(-magnitude, kind="stable")[:k])


def check_kept(layer, magnitude: np.ndarray, local: np.ndarray, exact: bool) -> None:
    """`local` is a tensor's kept set: the exact top-k, or (a carried tensor) the m
    largest entries with least <= m <= slots, every kept one at least every dropped one."""
    seg = magnitude[layer.offset : layer.offset + layer.numel]
    assert local.size == 0 or (np.all(np.diff(local) > 0) and local[-1] < layer.numel)
    if exact or not layer.variable:
        np.testing.assert_array_equal(local, brute_force_top_k(seg, layer.k), err_msg=layer.name)
        return
    assert layer.least <= local.size <= layer.slots, (layer.name, local.size)
    dropped = np.ones(layer.numel, bool)
    dropped[local] = False
    assert seg[local].min() >= seg[dropped].max(), layer.name


def steps_of(kind: str, n: int, steps: int, rng) -> list[np.ndarray]:
    """Consecutive updates whose scale drifts, jumps up (the count overflows the band)
    and down (it underflows), with ties, zeros or NaN by kind."""
    scale = np.concatenate([np.linspace(1, 1.3, steps // 2), [4.0, 0.2], np.ones(steps)])
    out = []
    for s in range(steps):
        x = rng.standard_normal(n).astype(np.float32) * np.float32(scale[s])
        if kind == "ties":
            x = np.round(x * 2).astype(np.float32)
        elif kind == "zeros":
            x[rng.random(n) < 0.9] = 0
        elif kind == "mostly zeros":  # the k-th largest is 0: every step selects exactly
            x[rng.random(n) < 0.995] = 0
        elif kind == "nan" and s % 5 == 3:
            x[rng.choice(n, 40, replace=False)] = np.nan
        out.append(x)
    return out


@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros", "mostly zeros", "nan"])
def test_the_selection_keeps_the_largest_entries_within_its_tolerance(kind):
    model = create_model("mlp", ModelSpec(1, 28, 10))
    layout = make_layout(model, KeepSchedule("depth", keep=0.2), "float16")
    assert sum(ly.variable for ly in layout.layers) == 2
    selection = Selection(layout)
    rng = np.random.default_rng(len(kind))
    counts = []
    for s, flat in enumerate(steps_of(kind, layout.num_params, 3 * REFRESH, rng)):
        kept = selection.kept(flat)
        magnitude = magnitudes(flat)
        for layer, local in zip(layout.layers, kept, strict=True):
            check_kept(layer, magnitude, local, exact=s % REFRESH == 0)
            if layer.variable and s % REFRESH:
                counts.append(local.size / layer.k)
    if kind != "mostly zeros":  # the thresholds did carry: counts other than k
        assert np.ptp(counts) > 0.01


def test_a_nan_ranks_above_every_number_between_refreshes():
    layout = make_layout(create_model("mlp", ModelSpec(1, 28, 10)), KeepSchedule(), "float32")
    big = layout.layers[0]
    selection = Selection(layout)
    rng = np.random.default_rng(5)
    for s in range(REFRESH + 3):
        flat = rng.standard_normal(layout.num_params).astype(np.float32)
        if s > REFRESH:  # carried steps: a few weights diverged
            flat[big.offset + np.array([7, 90_001])] = np.nan
        kept = selection.kept(flat)[0]
        if s > REFRESH:
            assert {7, 90_001} <= set(kept.tolist())
        check_kept(big, magnitudes(flat), kept, exact=s % REFRESH == 0)


def test_recorded_rows_are_the_largest_entries_of_each_real_update():
    """Real training (digits, LeNet): a dense float32 record of the same steps is the
    brute force; every sparse row holds, per tensor, the largest entries of that step's
    update within the tolerance, with their exact values."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("lenet", ModelSpec(1, 8, 10))
    params = list(model.parameters())
    layouts = [
        make_layout(model, KeepSchedule(keep=1.0), "float32"),
        make_layout(model, KeepSchedule("depth", keep=0.2), "float32"),
    ]
    assert sum(ly.variable for ly in layouts[1].layers) == 2
    stores = [MemoryUpdateStore(ly, n_samples=data.n_train, planned_steps=46) for ly in layouts]
    recorders = [Recorder(s, params, rows_per_flush=7) for s in stores]

    def both(info):
        for r in recorders:
            r.on_step(info)

    fit(
        model,
        make_optimizer("sgd", model.parameters(), 0.05, 0.9),
        data.x_train,
        data.y_train,
        epoch_batches(torch.arange(data.n_train), 64, 2, 0),
        Hooks(on_step=both),
    )
    for r in recorders:
        r.close(complete=True)
    steps = np.arange(stores[0].info().committed_steps)
    _, dense = stores[0].read_rows(steps)
    idx, values = stores[1].read_rows(steps)
    counts = stores[1].kept_counts()
    varied = set()
    for s in steps:
        magnitude = magnitudes(dense[s].numpy())
        for i, layer in enumerate(layouts[1].layers):
            cols = idx[s, layer.column : layer.column + layer.slots]
            local = cols[cols != MISSING_INDEX].astype(np.int64) - layer.offset
            assert local.size == counts[s, i]
            check_kept(layer, magnitude, local, exact=s % REFRESH == 0)
            if layer.variable:
                varied.add((layer.name, local.size))
    assert len(varied) > 4  # counts varied
    used = torch.from_numpy(idx != MISSING_INDEX)
    gathered = torch.gather(
        dense, 1, torch.from_numpy(np.where(idx == MISSING_INDEX, 0, idx).astype(np.int64))
    )
    torch.testing.assert_close(values[used], gathered[used], rtol=0, atol=0)


def test_a_format_3_store_reads_with_plain_zarr_and_reports_its_shares(tmp_path):
    """Plain zarr reads every committed row and its counts; `storage-report` gives each
    layer's achieved share against the requested one."""
    train_run(TrainConfig(epochs=1), RecordConfig(), tmp_path / "r")
    store = ZarrUpdateStore.open(tmp_path / "r/deltas.zarr")
    group = zarr.open_group(str(tmp_path / "r/deltas.zarr"), mode="r")
    assert group.attrs["format_version"] == 3
    committed = store.info().committed_steps
    plain = np.asarray(group["updates/indices"][:committed])
    counts = np.asarray(group["index/counts"][:committed])
    idx, _ = store.read_rows(np.arange(committed))
    np.testing.assert_array_equal(plain, idx)
    np.testing.assert_array_equal(counts, store.kept_counts())
    report = storage_report(tmp_path / "r")
    assert report["kept_entries"] == counts.sum()
    for i, (layer, row) in enumerate(zip(store.layout.layers, report["layers"], strict=True)):
        share = counts[:, i] / layer.numel
        assert row["variable"] == layer.variable
        assert row["kept_share"] == pytest.approx(
            {"mean": share.mean(), "min": share.min(), "max": share.max()}
        )
        if layer.variable:
            assert row["kept_share"]["min"] < row["kept_share"]["max"]
            assert abs(row["kept_share"]["mean"] / layer.keep - 1) < 0.25
    assert verify_run(tmp_path / "r")["ok"]
    writable = zarr.open_group(str(tmp_path / "r/deltas.zarr"), mode="r+")
    writable["index/counts"][3, 0] = counts[3, 0] + 1  # counts that disagree with the rows
    report = verify_run(tmp_path / "r")
    assert not report["ok"]
    assert any("disagree with their entry counts" in c["detail"] for c in report["checks"])


def test_format_2_stores_still_open_and_forget(tmp_path, monkeypatch):
    """A store as format 2 wrote it (exactly k per row, no counts, layers without
    slots) opens, forgets, verifies and reports."""
    monkeypatch.setattr(layout_module, "carries", lambda *a: False)
    path = tmp_path / "old"
    train_run(TrainConfig(epochs=1), RecordConfig(), path)
    monkeypatch.undo()
    meta_path = path / "deltas.zarr/zarr.json"
    meta = json.loads(meta_path.read_text())
    attrs = meta["attributes"]
    attrs["format_version"] = 2
    for layer in attrs["layers"]:
        del layer["slots"], layer["least"]
    meta_path.write_text(json.dumps(meta))
    group = zarr.open_group(str(path / "deltas.zarr"), mode="r+")
    del group["index/counts"]
    store = ZarrUpdateStore.open(path / "deltas.zarr")
    assert not any(ly.variable for ly in store.layout.layers)
    k = [ly.k for ly in store.layout.layers]
    assert (store.kept_counts() == k).all()
    forget_run(path, ForgetConfig("amnesiac"), ForgetRequest(ids=(1, 2)))
    assert Run.open(path).versions() == [0, 1]
    assert verify_run(path)["ok"]
    report = storage_report(path)
    assert not any(layer["variable"] for layer in report["layers"])
    assert report["kept_entries"] == sum(k) * store.info().committed_steps


def test_on_a_gpu_each_tensor_keeps_exactly_k_in_its_columns(monkeypatch):
    """Where the recorder selects with topk (a GPU), a format 3 row holds each tensor's
    exact top-k in its first k columns, the rest unused."""
    model = create_model("lenet", ModelSpec(1, 8, 10))
    layout = make_layout(model, KeepSchedule("depth", keep=0.2), "float32")
    store = MemoryUpdateStore(layout, n_samples=64, planned_steps=3)
    params = list(model.parameters())
    recorder = Recorder(store, params, rows_per_flush=3)
    recorder._selection = None  # the path a CUDA device takes
    before = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    deltas = []
    for step in range(3):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        now = torch.cat([p.detach().reshape(-1) for p in params])
        deltas.append(now - before)
        before = now.clone()
        recorder.on_step(StepInfo(Batch(step, 0, torch.arange(4) + 4 * step), 0.0))
    recorder.close(complete=True)
    idx, values = store.read_rows([0, 1, 2])
    counts = store.kept_counts()
    for s, delta in enumerate(deltas):
        for i, layer in enumerate(layout.layers):
            assert counts[s, i] == layer.k
            cols = idx[s, layer.column : layer.column + layer.slots]
            check_kept(layer, magnitudes(delta.numpy()), cols[: layer.k] - layer.offset, True)
            assert (cols[layer.k :] == MISSING_INDEX).all()
