"""Data-parallel training: 2 processes launched by torchrun with gloo on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_cli.errors import RunError
from unlearn_cli.rundir import Run
from unlearn_cli.store import ZarrUpdateStore

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "unlearn_cli", "--progress", "none", "train", *args,
    ]  # fmt: skip


DENSE = ("--keep", "1", "--delta-dtype", "float32", "--epochs", "1", "--batch-size", "32")


def flat(state: dict, names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1) for n in names])


# unequal class weights: each rank's share of a batch's loss is its share of the weights
@pytest.mark.parametrize(
    "weights", [(), ("--class-weight", "1,2,3,4,5,6,7,8,9,10")], ids=["plain", "class-weighted"]
)
def test_two_ranks_record_what_one_process_records(cli, tmp_path, weights):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    # `unlearn train --nproc-per-node 2` relaunches itself through torchrun
    args = (*DENSE, *weights)
    assert (
        cli("--progress", "none", "train", "--out", ddp, *args, "--nproc-per-node", "2").code == 0
    )
    assert cli("train", "--out", single, *args).code == 0
    a, b = Run.open(single), Run.open(ddp)
    assert b.meta["world_size"] == 2
    names = [n for n, _ in b.new_model().named_parameters()]
    theta_t = flat(b.load_state(0), names)
    store, one = b.store(), a.store()
    # the same updates as one process with the same global batches, within float reduction:
    # a rank's wrong share of the loss would show in the first steps by far more than 1e-6
    for step in range(10):
        got, _ = store.sum_updates(np.array([step]))
        want, _ = one.sum_updates(np.array([step]))
        assert torch.allclose(got, want, atol=1e-6), step
    # and the same model: a different reduction order can flip a ReLU at its kink later on,
    # a 1e-5 jump in one step's update that momentum carries on (7e-4 by the end seen here)
    assert torch.allclose(theta_t, flat(a.load_state(0), names), atol=1e-3)
    # theta_0 + the recorded dense updates = theta_T
    total, _ = store.sum_updates(np.arange(store.info().committed_steps))
    assert torch.allclose(flat(b.load_state(None), names) + total, theta_t, atol=1e-5)
    # the same sample -> step index: every sample once per epoch, in the same step
    for sample in (0, 700, 1436):
        steps = store.steps_touching(np.array([sample]))
        assert steps.size == 1
        assert np.array_equal(steps, a.store().steps_touching(np.array([sample])))
    r = cli("forget", ddp, "-m", "partial-amnesiac", "--ids", "5", "--json")
    assert r.code == 0, r.err
    assert cli("eval", ddp, "--json").code == 0


def test_bad_settings_fail_once_before_any_process_starts(cli, tmp_path):
    r = cli("train", "--out", tmp_path / "r", "--nproc-per-node", "2", "--dataset", "nosuch")
    assert r.code == 1 and "Unknown dataset 'nosuch'" in r.err and "processes" not in r.err
    r = cli("train", "--out", tmp_path / "r", "--nproc-per-node", "2", "--class-weight", "1,-1")
    assert r.code == 1 and "--class-weight must be" in r.err and "processes" not in r.err
    r = cli("train", "--out", tmp_path / "r", "--nproc-per-node", "0")
    assert r.code == 1 and "--nproc-per-node must be at least 1" in r.err
    assert not (tmp_path / "r").exists()


def test_a_failing_rank_ends_the_job_with_one_error(cli, tmp_path):
    r = cli("train", "--out", tmp_path / "r", "--nproc-per-node", "2", "--dataset", "npz:none.npz")
    assert r.code == 1 and "Training with 2 processes failed" in r.err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # about 30 s; .ci/run runs it with the kill loop
def test_a_killed_rank_leaves_an_incomplete_run_with_whole_rows(tmp_path):
    run = tmp_path / "ddp"
    proc = subprocess.Popen(
        torchrun("--out", str(run), "--epochs", "60", "--batch-size", "8", "--keep", "0.1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    meta, deadline, committed = run / "deltas.zarr" / "zarr.json", time.time() + 180, 0
    while time.time() < deadline and committed < 1:
        if meta.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                committed = json.loads(meta.read_text())["attributes"]["committed_steps"]
        time.sleep(0.05)
    rank1 = [pid for pid in child_pids(proc.pid) if b"RANK=1\x00" in environ(pid)]
    assert committed > 0 and rank1, "training never committed a shard"
    os.kill(rank1[0], signal.SIGKILL)
    try:
        assert proc.wait(timeout=120) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with pytest.raises(RunError, match="incomplete"):
        Run.open(run)
    store = ZarrUpdateStore.open(run / "deltas.zarr")
    info = store.info()
    assert 0 < info.committed_steps < info.planned_steps and not info.complete
    store.read_rows(np.arange(info.committed_steps))  # every committed row reads and checks


def child_pids(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""
