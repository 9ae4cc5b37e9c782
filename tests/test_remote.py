"""Runs on object storage: a local S3-compatible server (moto's server mode on 127.0.0.1,
started and stopped here) stands in for S3.

- train -> forget -> eval -> storage-report -> verify against s3:// URLs, giving the
  model hashes and store bytes of the same commands on local disk;
- two forgets racing for one version: exactly one commits, the other is told and
  leaves nothing behind;
- a writer killed mid-train or mid-forget (slow tests, run by .ci/run): the run opens
  with what was committed, nothing half-written is trusted, and the next command works.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import zarr

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from unlearn_cli import commits  # noqa: E402
from unlearn_cli import location as location_module  # noqa: E402
from unlearn_cli.errors import RunError  # noqa: E402
from unlearn_cli.location import location, zarr_store  # noqa: E402
from unlearn_cli.ops.forget import forget_run  # noqa: E402
from unlearn_cli.ops.forget_request import ForgetConfig  # noqa: E402
from unlearn_cli.ops.verify import verify_run  # noqa: E402
from unlearn_cli.requests import ForgetRequest  # noqa: E402
from unlearn_cli.rundir import Run  # noqa: E402

TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (a free port) and the environment that points boto at
    it; yields a function that makes a fresh bucket and returns its s3:// URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)

        def bucket() -> str:
            name = f"runs-{uuid.uuid4().hex[:10]}"
            boto3.client("s3").create_bucket(Bucket=name)
            return f"s3://{name}"

        yield bucket
    server.stop()


@pytest.fixture(scope="module")
def trained_remote(s3) -> str:
    """One remote digits/mlp run (1 epoch, seed 3), trained once for the module."""
    from unlearn_cli.cli.app import main

    url = f"{s3()}/base"
    assert main([*TRAIN, "--out", url, "--json"]) == 0
    return url


@pytest.fixture
def remote_run(s3, trained_remote) -> str:
    """A private copy of the trained remote run (a server-side copy), for tests that write."""
    url = f"{s3()}/run"
    source, target = location(trained_remote), location(url)
    fs = source.fs  # type: ignore[attr-defined]
    fs.copy(source.path, target.path, recursive=True)  # type: ignore[attr-defined]
    return url


def as_json(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_remote_run_matches_local(remote_run, cli, tmp_path):
    remote, local = remote_run, tmp_path / "run"
    as_json(cli(*TRAIN, "--out", local, "--json"))
    # The same training gives the same weights and the same store bytes, wherever it lives.
    r, loc = Run.open(location(remote)), Run.open(local)
    assert r.receipt(0)["model_hash"] == loc.receipt(0)["model_hash"]
    forgot = [
        as_json(cli("forget", out, "--ids", "3,17", "-m", "partial-amnesiac", "--json"))
        for out in (remote, local)
    ]
    assert forgot[0]["model_hash"] == forgot[1]["model_hash"]
    assert forgot[0]["bytes_read"] == forgot[1]["bytes_read"] > 0
    evals = [as_json(cli("eval", out, "--ids", "3,17", "--json")) for out in (remote, local)]
    assert evals[0]["models"] == evals[1]["models"]
    reports = [as_json(cli("storage-report", out, "--json")) for out in (remote, local)]
    assert reports[0]["total_bytes"] == reports[1]["total_bytes"] > 0
    assert reports[0]["files"] == reports[1]["files"]
    assert verify_run(location(remote))["ok"]
    # The remote layout: a commit record names the version's uniquely named folder.
    record = location(f"{remote}/versions/0001.json")
    folder = json.loads(record.read_text())["folder"]
    assert folder.startswith("0001-") and (location(f"{remote}/versions") / folder).is_dir()
    # A journal line per request, one object each.
    assert len(list(location(f"{remote}/ledger.jsonl.d").iterdir())) == 1


def test_eval_cache_keeps_remote_models(remote_run, cli, tmp_path):
    remote, cache = remote_run, tmp_path / "cache"
    first = as_json(cli("eval", remote, "--ids", "3", "--cache", cache, "--json"))
    run = Run.open(location(remote))
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{run.receipt(0)['model_hash']}.safetensors"
    ]
    # With the model gone from the bucket, the cached copy still serves (nothing is fetched);
    # without the cache the run is missing it.
    (run.version_dir(0) / "model.safetensors").unlink()
    again = as_json(cli("eval", remote, "--ids", "3", "--cache", cache, "--json"))
    assert again["models"] == first["models"]
    result = cli("eval", remote, "--ids", "3")
    assert result.code != 0 and "Checkpoint not found" in result.err


def test_shadows_are_cached_on_remote_runs(remote_run, cli, tmp_path):
    remote, local = remote_run, tmp_path / "run"
    as_json(cli(*TRAIN, "--out", local, "--json"))
    args = ("--ids", "3,17,40", "--shadows", "2", "--json")
    first, here = (as_json(cli("eval", out, *args)) for out in (remote, local))
    # The same shadows train wherever the run lives, and the attack agrees.
    assert first["lira"]["trained_now"] == here["lira"]["trained_now"] == 2
    assert first["models"] == here["models"]
    names = sorted(p.name for p in location(f"{remote}/shadows").iterdir())
    assert names == ["0000.npz", "0000.safetensors", "0001.npz", "0001.safetensors",
                     "shadows.json"]  # fmt: skip
    # A later eval of the remote run reads them back instead of training.
    again = as_json(cli("eval", remote, *args))
    assert again["lira"]["trained_now"] == 0 and again["models"] == first["models"]


def test_remote_refusals(s3, trained_remote, cli):
    result = cli("eval", f"{s3()}/missing", "--ids", "1")
    assert result.code != 0 and "Run directory not found" in result.err
    result = cli("eval", "nosuchproto://x/run", "--ids", "1")
    assert result.code != 0 and "nosuchproto" in result.err
    result = cli(*TRAIN, "--out", trained_remote)
    assert result.code != 0 and "already exists" in result.err and "--force" in result.err
    result = cli(*TRAIN, "--out", "s3://no-such-bucket-here/run")
    assert result.code != 0 and "bucket does not exist" in result.err
    assert "credentials" in result.err and "Traceback" not in result.err


def test_two_forgets_race_one_commits(remote_run, cli, monkeypatch):
    run_url = remote_run
    path = location(run_url)
    # Both writers reach the commit of version 1 together; the server decides.
    barrier = threading.Barrier(2, timeout=120)
    real = location_module.create_exclusive

    def racing(target, data):
        if target.name == "0001.json":
            barrier.wait()
        real(target, data)

    monkeypatch.setattr(commits, "create_exclusive", racing)
    outcomes: list[object] = []

    def forget(ids: tuple[int, ...]) -> None:
        try:
            outcomes.append(
                forget_run(path, ForgetConfig("partial-amnesiac"), ForgetRequest(ids=ids))
            )
        except RunError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=forget, args=(ids,)) for ids in ((3,), (5,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes if isinstance(o, RunError)]
    assert len(outcomes) == 2 and len(errors) == 1
    assert "Another unlearn command committed version 1" in errors[0].message
    run = Run.open(path)
    assert run.versions() == [0, 1]
    # The loser removed its folder: only the winner's remains.
    folders = [p.name for p in run.versions_dir.iterdir() if not p.name.endswith(".json")]
    assert sorted(folders) == sorted([run.version_dir(0).name, run.version_dir(1).name])
    monkeypatch.undo()
    assert as_json(cli("forget", run_url, "--ids", "9", "-m", "amnesiac", "--json"))["version"] == 2
    assert verify_run(path)["ok"]


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "unlearn_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


def _wait_for(what, proc: subprocess.Popen, timeout: float = 240.0) -> bool:
    """Poll `what()` until it is true (then True) or the process ends (then False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the writer")


@pytest.mark.slow
def test_killed_remote_train_keeps_committed_steps(s3, cli):
    run_url = f"{s3()}/run"
    path = location(run_url)
    # A dense float32 record of an mlp: shards of 128 steps, so training commits 3 times.
    args = [*TRAIN[:-4], "--epochs", "6", "--keep", "1", "--delta-dtype", "float32"]
    proc = _spawn([*args, "--out", run_url])

    def committed() -> int:
        try:
            group = zarr.open_group(store=zarr_store(path / "deltas.zarr", True), mode="r")
            return int(group.attrs["committed_steps"])
        except Exception:  # noqa: BLE001  (not created yet)
            return 0

    assert _wait_for(lambda: committed() > 0, proc), proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = committed()
    assert 0 < steps < 270
    with pytest.raises(RunError, match="incomplete"):
        Run.open(path)
    # Plain zarr reads every committed row, and every one holds real data.
    group = zarr.open_group(store=zarr_store(path / "deltas.zarr", True), mode="r")
    rows = np.asarray(group["updates/indices"][:steps])
    assert (rows != np.uint32(0xFFFFFFFF)).all()
    report = verify_run(path)
    assert any(f"{steps} of 270 steps committed" in r["detail"] for r in report["checks"])
    assert as_json(cli(*args, "--out", run_url, "--force", "--json"))["steps"] == 270
    assert Run.open(path).meta["status"] == "complete"


DIE_BEFORE_COMMIT = """
import os, sys
from unlearn_cli import commits
from unlearn_cli.cli.app import main

real = commits.create_exclusive

def create_exclusive(path, data):
    if path.name == "0001.json":
        os._exit(9)  # dies like SIGKILL: no cleanup runs
    real(path, data)

commits.create_exclusive = create_exclusive
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_remote_forget_killed_before_commit_leaves_only_unreferenced_objects(remote_run, cli):
    run_url = remote_run
    path = location(run_url)
    # The worst moment: every file of version 1 written, its commit record not yet.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DIE_BEFORE_COMMIT,
            "forget",
            run_url,
            "--ids",
            "1,2",
            "-m",
            "amnesiac",
        ],
        capture_output=True,
        env=os.environ.copy(),
    )
    assert proc.returncode == 9
    orphans = [p.name for p in (path / "versions").iterdir() if p.name.startswith("0001-")]
    assert len(orphans) == 1 and (path / "versions" / orphans[0] / "model.safetensors").exists()
    run = Run.open(path)
    assert run.versions() == [0]  # the folder is written but no commit names it
    result = as_json(cli("forget", run_url, "--ids", "1,2", "-m", "amnesiac", "--json"))
    assert result["version"] == 1
    assert Run.open(path).version_dir(1).name != orphans[0]
    assert verify_run(path)["ok"]


def test_shadows_and_evidence_on_object_storage(remote_run, cli, tmp_path):
    """Shadows built on a remote run are the local run's, and every receipt there carries the
    evidence they give."""
    from unlearn_cli.shadows import read_shadows

    built = as_json(cli("shadows", remote_run, "-k", "2", "--json"))
    assert built["trained_now"] == 2 and built["path"].startswith("s3://")
    local = tmp_path / "run"
    as_json(cli(*TRAIN, "--out", local, "--shadows", "2", "--json"))
    remote_phi = read_shadows(Run.open(location(remote_run))).phi
    assert np.array_equal(remote_phi, read_shadows(Run.open(local)).phi)
    doc = as_json(cli("forget", remote_run, "--ids", "3,17", "-m", "replay", "--json"))
    assert doc["evidence"]["verified"] is True and doc["evidence"]["shadows"] == 2
    assert as_json(cli("verify", remote_run, "--json"))["ok"]
