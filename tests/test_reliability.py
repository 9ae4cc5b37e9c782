"""Damaged data is detected, not used; disks fill and storage is read-only; writers collide."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from unlearn_cli.errors import RunError, StoreError
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store import ZarrUpdateStore
from unlearn_cli.store import chunks as store_chunks
from unlearn_cli.train_config import TrainConfig


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path`, by relative path."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_step(run: Path, array: str, step: int) -> None:
    """Flip a byte inside the chunk of `updates/<array>` holding `step`, found through the
    index at the end of its shard (one row per chunk; shard_rows rows per shard)."""
    attrs = json.loads((run / "deltas.zarr/zarr.json").read_text())["attributes"]
    shard_rows = attrs["rows_per_shard"]
    path = run / f"deltas.zarr/updates/{array}/c/{step // shard_rows}/0"
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(shard_rows * 16 + 4) : -4]), "<u8").reshape(-1, 2)
    offset, nbytes = index[step % shard_rows]
    data[int(offset + nbytes // 2)] ^= 0xFF
    path.write_bytes(bytes(data))


def first_step_of(run: Path, sample: int) -> int:
    return int(ZarrUpdateStore.open(run / "deltas.zarr").steps_touching([sample])[0])


# -- corrupted chunks are errors, never data ---------------------------------------------
def test_a_flipped_byte_in_the_store_fails_the_forget_and_writes_nothing(run_copy, cli):
    step = first_step_of(run_copy, 17)
    damage_step(run_copy, "values", step)
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "partial-amnesiac", "--ids", "3,17")
    assert result.code == 1 and "Traceback" not in result.err
    assert f"is corrupt: the chunk of updates/values holding step {step} " in result.err
    assert "restore deltas.zarr from a backup" in result.err
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("array", ["batch_ids", "sample_steps"])
def test_a_damaged_sample_index_fails_the_forget_and_writes_nothing(run_copy, cli, array):
    flip_byte(run_copy / f"deltas.zarr/index/{array}/c/0")
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "partial-amnesiac", "--ids", "3,17")
    assert result.code == 1 and "Traceback" not in result.err
    assert "The sample index in" in result.err and "is damaged" in result.err
    assert "restore deltas.zarr from a backup" in result.err
    assert snapshot(run_copy) == before


def test_verify_reports_the_damaged_chunk_and_exits_1(run_copy, cli):
    assert cli("verify", run_copy).code == 0
    damage_step(run_copy, "indices", 5)
    result = cli("verify", run_copy, "--json")
    report = json.loads(result.out)
    assert result.code == 1 and report["ok"] is False and report["problems"] >= 1
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed[0]["what"] == "deltas.zarr rows" and "updates/indices" in failed[0]["detail"]
    assert "verify found" in result.err


def test_a_changed_model_file_is_refused_on_load_and_by_verify(run_copy, cli):
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(1,)))
    flip_byte(run_copy / "versions/0001/model.safetensors", where=0.9)  # a weight, not the header
    with pytest.raises(RunError, match="does not match the hash recorded for it"):
        Run.open(run_copy).load_model(1)
    result = cli("verify", run_copy, "--json")
    failed = [c["what"] for c in json.loads(result.out)["checks"] if not c["ok"]]
    assert result.code == 1 and failed == ["version 0001 model"]


def test_verify_catches_a_ledger_that_forgets_less_than_its_parent(run_copy, cli):
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(1, 2)))
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(3,)))
    path = run_copy / "versions/0002/ledger.json"
    ledger = json.loads(path.read_text())
    ledger["forgotten_ids"] = [3]
    path.write_text(json.dumps(ledger))
    report = json.loads(cli("verify", run_copy, "--json").out)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["what"] for c in failed] == ["version 0002 ledger"]
    assert "no longer lists 2 ids its parent 1 had forgotten" in failed[0]["detail"]


def test_a_corrupt_covariance_chunk_is_an_error(run_copy):
    path = next(
        p
        for p in (run_copy / "covariance.zarr/layers/00/vectors").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    flip_byte(path)
    with pytest.raises(StoreError, match="covariance store .* is corrupt"):
        forget_run(run_copy, ForgetConfig("pgu", {"epochs": 1}), ForgetRequest(ids=(1,)))
    assert Run.open(run_copy).versions() == [0]


def test_a_store_with_torn_attributes_is_named(run_copy, cli):
    meta_path = run_copy / "deltas.zarr/zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"] = {k: meta["attributes"][k] for k in ("format", "format_version")}
    meta_path.write_text(json.dumps(meta))
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "1")
    assert result.code == 1 and "has incomplete attributes (missing 'layers')" in result.err
    assert snapshot(run_copy) == before
    assert cli("verify", run_copy).code == 1


def test_format_1_stores_without_checksums_still_open(tmp_path, monkeypatch):
    """Stores written before checksums (format 1) read as before; `checksummed` says so."""
    blosc_only = store_chunks.checked_zstd()[:1]
    monkeypatch.setattr("unlearn_cli.store.zarr_store.checked_zstd", lambda: blosc_only)
    path = tmp_path / "old"
    train_run(TrainConfig(epochs=1), RecordConfig(), path)
    group = zarr.open_group(str(path / "deltas.zarr"), mode="r+")
    group.attrs["format_version"] = 1
    store = ZarrUpdateStore.open(path / "deltas.zarr")
    assert not store.checksummed
    indices, values = store.read_rows([0, 1])
    assert indices.shape[0] == 2 and np.isfinite(values.numpy()).all()
    group.attrs["format_version"] = 7
    with pytest.raises(StoreError, match="format version 7; this unlearn reads version 1, 2 or 3"):
        ZarrUpdateStore.open(path / "deltas.zarr")


# -- disks fill, storage is read-only, writers collide -----------------------------------
def test_a_disk_that_fills_during_recording_is_a_clear_error(tmp_path, cli, monkeypatch):
    written, append = [], ZarrUpdateStore.append

    def full(self, rows):  # the first shard fits, the disk is full for the second
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(rows.epochs))
        append(self, rows)

    monkeypatch.setattr(ZarrUpdateStore, "append", full)
    monkeypatch.setattr("unlearn_cli.new_run.rows_per_shard", lambda width: 16)
    out = tmp_path / "run"
    result = cli("train", "--out", out, "--epochs", "2")
    assert result.code == 1 and "Traceback" not in result.err
    assert "Could not write the update store" in result.err and "free disk space" in result.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "training"  # never mistaken for a finished run
    group = zarr.open_group(str(out / "deltas.zarr"), mode="r")
    committed = group.attrs["committed_steps"]
    assert committed == written[0] == 16
    assert np.asarray(group["updates/values"][:committed]).shape[0] == committed
    refused = cli("forget", out, "-m", "amnesiac", "--ids", "1")
    assert refused.code == 1 and "is incomplete" in refused.err and "16 of" in refused.err


def test_a_disk_that_fills_while_writing_a_version_leaves_nothing(run_copy, cli, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("unlearn_cli.rundir.save_weights", full)
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "1")
    assert result.code == 1 and "Could not write version 1" in result.err
    assert "No space left on device" in result.err and "no version was written" in result.err
    assert snapshot(run_copy) == before
    assert not list((run_copy / "versions").glob(".tmp-*"))


def test_a_read_only_run_refuses_writes_and_still_evaluates(run_copy, cli, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr("unlearn_cli.fileio.os.open", read_only)
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "1")
    assert result.code == 1 and "cannot be written here (Read-only file system)" in result.err
    assert cli("eval", run_copy, "--ids", "1,2", "--json").code == 0
    assert cli("storage-report", run_copy, "--json").code == 0
    assert snapshot(run_copy) == before


def test_a_second_writer_gets_a_clear_error(run_copy, cli):
    """The lock is an flock on RUN/.lock: another process (here: another open file) holding
    it makes a forget fail at once, naming the cause, with nothing written."""
    fd = os.open(run_copy / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(run_copy)
        result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "1")
        assert result.code == 1 and "Another unlearn command is writing" in result.err
        assert "wait for it to finish" in result.err and snapshot(run_copy) == before
    finally:
        os.close(fd)
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "1").code == 0


def test_a_zero_byte_npz_is_a_data_error_not_an_interrupt(tmp_path, cli):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    result = cli("train", "--dataset", f"npz:{empty}", "--out", tmp_path / "r")
    assert result.code == 1 and "is not a readable .npz file" in result.err
    assert "interrupted" not in result.err and not (tmp_path / "r").exists()


def test_a_torn_run_json_is_named(run_copy, cli):
    text = (run_copy / "run.json").read_text()
    (run_copy / "run.json").write_text(text[: len(text) // 2])
    result = cli("eval", run_copy, "--ids", "1")
    assert result.code == 1 and "run.json is not valid JSON" in result.err


def test_a_stale_temp_folder_is_removed_by_the_next_writer(run_copy):
    stale = run_copy / "versions/.tmp-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(1,)))
    assert not stale.exists()
