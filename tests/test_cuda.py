"""CUDA: training, recording and forgetting on a GPU. Skipped where no GPU is present
(the default test machine has none; run `pytest -m cuda` on one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearn_cli.rundir import Run

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]

DENSE = ("--epochs", "1", "--keep", "1", "--delta-dtype", "float32", "--device", "cuda")


def test_a_gpu_run_records_its_trajectory_and_opens_on_the_cpu(cli, tmp_path):
    run = tmp_path / "gpu"
    r = cli("train", "--out", run, *DENSE, "--json")
    assert r.code == 0, r.err
    opened = Run.open(run)
    state = opened.load_state(0)  # CPU tensors, whatever trained them
    assert all(t.device.type == "cpu" for t in state.values())
    names = [n for n, _ in opened.new_model().named_parameters()]
    store = opened.store()
    total, _ = store.sum_updates(np.arange(store.info().committed_steps))
    init = opened.load_state(None)
    flat0 = torch.cat([init[n].reshape(-1) for n in names])
    flat_t = torch.cat([state[n].reshape(-1) for n in names])
    assert torch.allclose(flat0 + total, flat_t, atol=1e-4)


@pytest.mark.parametrize("method", ["replay", "partial-amnesiac", "label-flip", "retrain"])
def test_methods_run_on_the_gpu(cli, tmp_path, method):
    run = tmp_path / "gpu"
    assert cli("train", "--out", run, *DENSE).code == 0
    r = cli("forget", run, "-m", method, "--ids", "3,4", "--device", "cuda", "--force", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["noop"] is False
    assert cli("eval", run, "--json").code == 0


def test_gpu_shadows_leave_the_callers_cuda_generator_alone(cli, tmp_path):
    run = tmp_path / "gpu"
    assert cli("train", "--out", run, *DENSE).code == 0
    torch.cuda.manual_seed(1234)
    before = torch.cuda.get_rng_state()
    r = cli("eval", run, "--ids", "3,4", "--shadows", "2", "--json")
    assert r.code == 0, r.err
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_a_gpu_sparse_record_keeps_exactly_k_per_tensor(cli, tmp_path):
    """On a GPU the recorder selects with topk: format 3 rows hold exactly k per tensor
    (the carried thresholds are the CPU's), and every row reads and verifies."""
    run = tmp_path / "gpu"
    assert cli("train", "--out", run, "--epochs", "1", "--device", "cuda").code == 0
    store = Run.open(run).store()
    k = [layer.k for layer in store.layout.layers]
    assert (store.kept_counts() == k).all()
    assert cli("verify", run).code == 0
