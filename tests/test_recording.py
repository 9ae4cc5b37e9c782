"""Recorded updates: the domain invariants, the index, kills and corruption."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from unlearn_cli.data import load_dataset
from unlearn_cli.errors import RunError, StoreError
from unlearn_cli.fileio import load_weights
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.rundir import Run
from unlearn_cli.store import KeepSchedule, MemoryUpdateStore, ZarrUpdateStore, make_layout
from unlearn_cli.store import recorder as recorder_module
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.train_config import TrainConfig, make_optimizer
from unlearn_cli.training import Hooks, epoch_batches, fit


def test_dense_record_sums_to_final_weights(tmp_path):
    """keep=1, float32: theta_0 + sum of every recorded delta == theta_T."""
    config = TrainConfig(model="lenet", epochs=1, batch_size=64, momentum=0.0)
    train_run(config, RecordConfig(keep=1.0, delta_dtype="float32"), tmp_path / "r")
    run = Run.open(tmp_path / "r")
    store = ZarrUpdateStore.open(run.store_path)
    assert store.layout.dense
    total, _ = store.sum_updates(np.arange(store.info().committed_steps))
    model = run.new_model()
    init = load_weights(run.init_path)
    final = load_weights(run.version_dir(0) / "model.safetensors")
    names = [n for n, _ in model.named_parameters()]
    theta0 = torch.cat([init[n].reshape(-1) for n in names])
    theta_t = torch.cat([final[n].reshape(-1) for n in names])
    torch.testing.assert_close(theta0 + total, theta_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ring", [1, 3, 32])  # 3: blocks end inside shards and mid-epoch
def test_each_row_is_its_own_steps_update(monkeypatch, ring):
    """The recorder holds deltas in a block before selecting them: each stored row is
    still exactly its step's parameter change, with that step's epoch and samples."""
    monkeypatch.setattr(recorder_module, "RING_ROWS", ring)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", ModelSpec(1, 8, 10))
    params = list(model.parameters())
    store = MemoryUpdateStore(
        make_layout(model, KeepSchedule(keep=1.0), "float32"),
        n_samples=data.n_train,
        planned_steps=46,
    )
    recorder = Recorder(store, params, rows_per_flush=7)
    snapshots = [torch.cat([p.detach().reshape(-1) for p in params]).clone()]
    batches = []

    def on_step(info):
        recorder.on_step(info)
        snapshots.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
        batches.append(info.batch)

    opt = make_optimizer("sgd", model.parameters(), 0.05, 0.9)
    batches_in = epoch_batches(torch.arange(data.n_train), 64, 2, 0)
    fit(model, opt, data.x_train, data.y_train, batches_in, Hooks(on_step=on_step))
    recorder.close(complete=True)
    steps = np.arange(store.info().committed_steps)
    assert len(steps) == len(batches) == 46
    idx, rows = store.read_rows(steps)
    # a dense record's positions are every parameter in order (one shared row of them)
    assert np.array_equal(idx, np.broadcast_to(np.arange(rows.shape[1]), idx.shape))
    for s in steps:
        assert torch.equal(rows[s], snapshots[s + 1] - snapshots[s]), s
        np.testing.assert_array_equal(store.index().batch(s), batches[s].ids.numpy())
        assert store.index().epochs[s] == batches[s].epoch


def test_depth_schedule_rises_with_depth():
    model = create_model("lenet", ModelSpec(1, 28, 10))
    fractions = KeepSchedule("depth", keep=0.2, keep_min=0.02).fractions(model)
    values = list(fractions.values())
    assert values[0] == pytest.approx(0.02) and values[-1] == pytest.approx(0.2)
    assert values == sorted(values)


def test_index_round_trip(trained_run):
    run = Run.open(trained_run)
    store = ZarrUpdateStore.open(run.store_path)
    index = store.index()
    cfg = run.meta["config"]
    expected = list(
        epoch_batches(torch.arange(index.n_samples), cfg["batch_size"], cfg["epochs"], cfg["seed"])
    )
    assert index.steps == len(expected)
    for b in expected:
        np.testing.assert_array_equal(index.batch(b.step), b.ids.numpy())
        assert index.epochs[b.step] == b.epoch
    for epoch in range(cfg["epochs"]):
        ids = np.concatenate([index.batch(s) for s in np.flatnonzero(index.epochs == epoch)])
        assert sorted(ids.tolist()) == list(range(index.n_samples))  # each sample once per epoch
    for sid in (0, 700, 1436):
        steps = store.steps_touching([sid])
        assert len(steps) == cfg["epochs"] and all(sid in index.batch(s) for s in steps)


KILL_SCRIPT = """
import sys
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.train_config import TrainConfig
train_run(TrainConfig(epochs=40, batch_size=8), RecordConfig(keep=0.1), sys.argv[1])
"""


def test_killed_train_leaves_a_readable_store(tmp_path):
    path = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)])
    meta = path / "deltas.zarr" / "zarr.json"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and committed < 2:
        if meta.exists():
            with contextlib.suppress(ValueError, KeyError):
                committed = json.loads(meta.read_text())["attributes"]["committed_steps"]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert committed > 0, "the training never committed a chunk"
    with pytest.raises(RunError, match="incomplete") as exc:
        Run.open(path)
    assert "steps recorded" in exc.value.message
    store = ZarrUpdateStore.open(path / "deltas.zarr")
    info = store.info()
    assert 0 < info.committed_steps < info.planned_steps and not info.complete
    store.read_rows(np.arange(info.committed_steps))  # every committed row reads and checks
    assert store.steps_touching(np.arange(100)).max() < info.committed_steps


def _shard_files(store_path, array):
    return sorted(p for p in (store_path / "updates" / array / "c").rglob("*") if p.is_file())


def test_damaged_chunk_names_the_step(run_copy):
    store_path = run_copy / "deltas.zarr"
    shard = _shard_files(store_path, "indices")[0]
    data = bytearray(shard.read_bytes())
    data[100:400] = os.urandom(300)
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt") as exc:
        ZarrUpdateStore.open(store_path).read_rows([0, 1])
    assert "step" in exc.value.message


def test_missing_chunk_names_step_and_layer(run_copy):
    store_path = run_copy / "deltas.zarr"
    for f in _shard_files(store_path, "values"):
        f.unlink()
    with pytest.raises(StoreError, match=r"corrupt at step 3, layer '0\.0\.weight'"):
        ZarrUpdateStore.open(store_path).read_rows([3])
