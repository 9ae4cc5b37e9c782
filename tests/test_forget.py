"""`unlearn forget`: amnesiac and partial amnesiac, versions, ledger, receipts, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_cli.errors import RequestError, RunError, StoreError
from unlearn_cli.fileio import load_weights, state_hash
from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

PLAIN_SGD = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.0)


def train(path: Path, config: TrainConfig = PLAIN_SGD, **record) -> Path:
    train_run(config, RecordConfig(**record), path)
    return path


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> Path:
    """Plain SGD with a dense float32 record: theta_T = theta_0 + sum of the records."""
    return train(tmp_path_factory.mktemp("dense") / "run", keep=1.0, delta_dtype="float32")


def fresh(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


def weights(run: Path, version: int) -> dict[str, torch.Tensor]:
    return load_weights(run / f"versions/{version:04d}/model.safetensors")


def ids(*values: int) -> ForgetRequest:
    return ForgetRequest(ids=values)


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_forgetting_every_sample_from_a_dense_store_returns_theta_0(dense_run, tmp_path):
    run = fresh(dense_run, tmp_path)
    n = Run.open(run).meta["dataset"]["n_train"]
    result = forget_run(run, ForgetConfig("amnesiac"), ForgetRequest(ids=tuple(range(n))))
    assert result["steps"]["affected_share"] == 1.0
    theta0 = load_weights(run / "init.safetensors")
    for name, value in weights(run, result["version"]).items():
        torch.testing.assert_close(value, theta0[name], atol=2e-5, rtol=0)


def test_a_shared_step_is_subtracted_once(dense_run, tmp_path):
    run = fresh(dense_run, tmp_path)
    store_run = Run.open(run)

    index = store_run.store().index()
    a = index.batch(0)[:2].tolist()  # two samples of step 0 ...
    b = index.batch(0)[2:4].tolist()  # ... and two more from the same step
    first = forget_run(run, ForgetConfig("amnesiac"), ForgetRequest(ids=tuple(a)))
    second = forget_run(run, ForgetConfig("amnesiac"), ForgetRequest(ids=tuple(b)))
    assert 0 in first["steps"]["subtracted"] and 0 not in second["steps"]["subtracted"]
    assert second["steps"]["already_subtracted"] >= 1
    ledger = json.loads((run / "versions/0002/ledger.json").read_text())
    assert len(ledger["subtracted_steps"]) == len(set(ledger["subtracted_steps"]))
    # The two requests in sequence equal one request for all four ids.
    together = forget_run(
        run, ForgetConfig("amnesiac", from_version=0), ForgetRequest(ids=tuple(a + b))
    )
    for name, value in weights(run, 2).items():
        torch.testing.assert_close(
            value, weights(run, together["version"])[name], atol=1e-6, rtol=0
        )


def test_forgetting_the_same_ids_again_is_a_noop(run_copy, cli):
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "5,6").code == 0
    again = cli("forget", run_copy, "-m", "amnesiac", "--ids", "6,5")
    assert again.code == 0 and "nothing to do" in again.err
    assert Run.open(run_copy).versions() == [0, 1]


def test_partial_from_dense_equals_partial_recorded_at_train_time(dense_run, tmp_path):
    """Recorded with --keep-tolerance 0 (the exact top-k at every step), the record is
    the dense record pruned; with the default tolerance, each step keeps within 25% of
    k of its largest entries, and the subtraction lands close to the exact one."""
    exact = train(
        tmp_path / "pruned", keep=0.2, schedule="depth", delta_dtype="float32", keep_tolerance=0
    )
    carried = train(tmp_path / "carried", keep=0.2, schedule="depth", delta_dtype="float32")
    dense = fresh(dense_run, tmp_path)
    request = ids(1, 50, 700)
    a = forget_run(
        dense, ForgetConfig("partial-amnesiac", {"keep": 0.2, "schedule": "depth"}), request
    )
    b = forget_run(exact, ForgetConfig("partial-amnesiac"), request)
    forget_run(carried, ForgetConfig("partial-amnesiac"), request)
    assert a["steps"]["subtracted"] == b["steps"]["subtracted"]
    for name, value in weights(dense, 1).items():
        torch.testing.assert_close(value, weights(exact, 1)[name], atol=1e-6, rtol=0)
        moved = (value - weights(dense, 0)[name]).norm()  # what the subtraction moved
        apart = (weights(carried, 1)[name] - value).norm()  # 0.11x and 0.04x measured
        assert apart <= 0.25 * moved, name
    # Pruning the record further is exact; asking for more than it kept is refused.
    with pytest.raises(StoreError, match="cannot be pruned"):
        forget_run(exact, ForgetConfig("partial-amnesiac", {"keep": 0.5}), ids(2))


def test_forget_is_deterministic(run_copy):
    for method, params in (("amnesiac", {"finetune_epochs": 1}), ("retrain", {"epochs": 1})):
        a = forget_run(run_copy, ForgetConfig(method, params, from_version=0), ids(3, 4, 99))
        b = forget_run(run_copy, ForgetConfig(method, params, from_version=0), ids(3, 4, 99))
        assert a["model_hash_after"] == b["model_hash_after"] != a["model_hash_before"]


def test_retrain_with_another_seed(run_copy):
    """`-p seed=N` shuffles with another seed: another exact model, itself deterministic."""
    config = ForgetConfig("retrain", {"epochs": 1}, from_version=0)
    own = forget_run(run_copy, config, ids(3, 4, 99))
    other = ForgetConfig("retrain", {"epochs": 1, "seed": 7}, from_version=0)
    a = forget_run(run_copy, other, ids(3, 4, 99))
    b = forget_run(run_copy, other, ids(3, 4, 99))
    assert a["model_hash_after"] == b["model_hash_after"] != own["model_hash_after"]
    assert a["details"]["seed"] == 7
    assert own["details"]["seed"] == Run.open(run_copy).meta["config"]["seed"]
    # eval between the two: how far two exact models lie apart on this request
    result, _ = evaluate(run_copy, a["version"], reference=str(own["version"]))
    assert result["gap"]["weight_distance"]["l2"] > 0
    assert result["warnings"] == []


def test_receipt_ledger_and_journal(run_copy):
    result = forget_run(run_copy, ForgetConfig("partial-amnesiac"), ids(10, 11, 12))
    receipt = json.loads((run_copy / "versions/0001/receipt.json").read_text())
    for key in ("request", "method", "params", "ids", "steps", "bytes_read", "wall_seconds"):
        assert key in receipt
    assert receipt["ids"]["newly_forgotten"] == [10, 11, 12]
    assert receipt["model_hash_before"] == state_hash(weights(run_copy, 0))
    assert receipt["model_hash_after"] == state_hash(weights(run_copy, 1))
    assert 0 < receipt["steps"]["affected_share"] < 1 and result["bytes_read"] > 0
    lines = (run_copy / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(x)["version"] for x in lines] == [1]


def test_a_journal_line_lost_to_a_kill_is_restored(run_copy):
    forget_run(run_copy, ForgetConfig("amnesiac"), ids(1))
    (run_copy / "ledger.jsonl").write_text('{"version": 1, "par')  # torn by a kill
    forget_run(run_copy, ForgetConfig("amnesiac"), ids(2))
    lines = (run_copy / "ledger.jsonl").read_text().splitlines()
    versions = [json.loads(x)["version"] for x in lines[1:]]
    assert versions == [1, 2]


def test_store_methods_refuse_a_retrained_version(run_copy):
    forget_run(run_copy, ForgetConfig("retrain", {"epochs": 1}), ids(1))
    with pytest.raises(RequestError, match="rebuilt without the recorded trajectory"):
        forget_run(run_copy, ForgetConfig("amnesiac"), ids(2))
    forget_run(
        run_copy, ForgetConfig("amnesiac", from_version=0), ids(2)
    )  # an earlier version works


def test_retrain_leaves_out_exactly_the_forgotten_ids(run_copy):
    """Retrain runs the run's own schedule over the retained ids only."""
    config = Run.open(run_copy).meta["config"]
    result = forget_run(run_copy, ForgetConfig("retrain"), ids(0))
    retained = 1437 - 1
    assert result["details"]["steps"] == config["epochs"] * -(-retained // config["batch_size"])
    assert result["model_hash_after"] != result["model_hash_before"]


def test_theta_0_is_read_only_by_the_methods_that_use_it(run_copy):
    """A subtraction never reads init.safetensors (on object storage, a fetch saved);
    retrain fails on a damaged one before writing anything."""
    init = run_copy / "init.safetensors"
    init.write_bytes(b"damaged")
    result = forget_run(run_copy, ForgetConfig("partial-amnesiac"), ids(7, 8))
    assert result["version"] == 1
    with pytest.raises(RunError, match="Checkpoint is corrupt: .*init.safetensors"):
        forget_run(run_copy, ForgetConfig("retrain"), ids(9))
    assert Run.open(run_copy).versions() == [0, 1]


def test_batchnorm_statistics_recalibrate_or_keep(tmp_path):
    run = train(tmp_path / "bn", TrainConfig(model="resnet9", epochs=1, batch_size=128), keep=0.1)
    keep = forget_run(run, ForgetConfig("amnesiac", {"bn": "keep"}), ids(1, 2, 3))
    recal = forget_run(
        run,
        ForgetConfig("amnesiac", {"bn": "recalibrate", "bn_samples": 256}, from_version=0),
        ids(1, 2, 3),
    )
    before, kept, recalibrated = (
        weights(run, 0),
        weights(run, keep["version"]),
        weights(run, recal["version"]),
    )
    stats = [k for k in before if k.endswith("running_mean")]
    assert stats and all(torch.equal(kept[k], before[k]) for k in stats)
    assert any(not torch.equal(recalibrated[k], before[k]) for k in stats)
    assert recal["details"]["bn_recalibrated_on"] == 256


def test_heavy_requests_stop_before_damage_unless_forced(run_copy, cli):
    before = snapshot(run_copy)
    refused = cli("forget", run_copy, "-m", "partial-amnesiac", "--class", "3")
    assert refused.code == 1 and "over the 5% that partial-amnesiac takes" in refused.err
    assert "use -m optimize -p partial=true (what -m auto picks" in refused.err
    assert snapshot(run_copy) == before
    capped = cli("forget", run_copy, "-m", "replay", "--class", "3", "--max-affected-share", "0.5")
    assert capped.code == 1 and "over the 50% that replay takes" in capped.err
    forced = cli("forget", run_copy, "-m", "partial-amnesiac", "--class", "3", "--force")
    assert forced.code == 0 and "warning" in forced.err and "optimize -p partial=true" in forced.err


def test_dry_run_resolves_the_request_and_writes_nothing(run_copy, cli):
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "amnesiac", "--class", "3", "--dry-run", "--json")
    plan = json.loads(result.out)
    assert result.code == 0 and snapshot(run_copy) == before
    assert plan["dry_run"] and plan["auto"]["chosen"] == "optimize"
    assert plan["steps"]["affected_share"] > 0.5 and plan["retrain_steps"] > 0
    by = {m["method"]: m for m in plan["methods"]}
    assert by["amnesiac"]["over_share_limit"] and by["amnesiac"]["training_steps"] == 0
    assert by["replay"]["store_rows"] == plan["steps"]["to_subtract"]
    assert by["retrain"]["cost_vs_retrain"] == 1.0
    small = json.loads(
        cli("forget", run_copy, "-m", "auto", "--ids", "4", "--dry-run", "--json").out
    )
    assert small["auto"]["chosen"] == "replay" and not small["methods"][0]["over_share_limit"]


# -- bad input: one clear message, exit 1, nothing written -------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--ids", "5,x"], "comma-separated integers"),
        (["--ids", "-3"], "negative"),
        (["--ids", "1,99999"], "out of range"),
        ([], "names no samples"),
        (["--class", "11"], "has no class '11'"),
        (["--class", "cat"], "has no class 'cat'"),
        (["--ids-file", "missing.txt"], "Ids file not found"),
        (["--ids", "1", "-p", "kep=0.2"], "Did you mean 'keep'"),
        (["--ids", "1", "-p", "keep=1.5"], "must be a float in the range (0, 1]"),
        (["--ids", "1", "-p", "keep=abc"], "must be a float"),
        (["--ids", "1", "--from", "7"], "has no version 7"),
    ],
)
def test_bad_requests_write_nothing(run_copy, cli, args, message):
    before = snapshot(run_copy)
    result = cli("forget", run_copy, "-m", "partial-amnesiac", *args)
    assert result.code == 1, result.err
    assert message in result.err and result.err.count("error:") == 1
    assert snapshot(run_copy) == before


def test_unknown_method_suggests(run_copy, cli):
    result = cli("forget", run_copy, "-m", "amnesic", "--ids", "1")
    assert result.code == 1 and "Did you mean 'amnesiac'" in result.err


def test_ids_files(run_copy, tmp_path):
    text = tmp_path / "ids.txt"
    text.write_text("# withdrawn consent\n4\n\n9\n")
    np.save(tmp_path / "ids.npy", np.array([4, 12]))
    (tmp_path / "ids.json").write_text("[4, 13]")
    for name, expected in (("ids.txt", [4, 9]), ("ids.npy", [12]), ("ids.json", [13])):
        result = forget_run(
            run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids_file=tmp_path / name)
        )
        assert result["ids"]["newly_forgotten"] == expected
    bad = tmp_path / "bad.txt"
    bad.write_text("4\nfour\n")
    with pytest.raises(RequestError, match="line 2"):
        forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids_file=bad))


def test_run_without_store(tmp_path, cli):
    run = tmp_path / "norec"
    train_run(TrainConfig(epochs=1), RecordConfig(enabled=False), run)
    result = cli("forget", run, "-m", "amnesiac", "--ids", "1")
    assert result.code == 1 and "no update store" in result.err and "retrain" in result.err
    assert Run.open(run).versions() == [0]


def test_store_of_another_model_is_refused(run_copy, tmp_path, cli):
    other = train(tmp_path / "other", TrainConfig(epochs=1, seed=5), keep=0.1)
    shutil.rmtree(run_copy / "deltas.zarr")
    shutil.copytree(other / "deltas.zarr", run_copy / "deltas.zarr")
    result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "1")
    assert result.code == 1 and "belongs to another model" in result.err
    assert Run.open(run_copy).versions() == [0]


def test_amnesiac_needs_no_training_data(run_copy, tmp_path, monkeypatch):
    """A GDPR erasure often arrives after the data is gone: ids and the store suffice."""
    from unlearn_cli.errors import DataNotFoundError

    def gone(*args, **kwargs):
        raise DataNotFoundError("the training data is gone")

    monkeypatch.setattr(Run, "load_dataset", gone)
    result = forget_run(run_copy, ForgetConfig("partial-amnesiac"), ids(7, 8))
    assert result["data_read"] is False and result["version"] == 1
    with pytest.raises(DataNotFoundError):
        forget_run(run_copy, ForgetConfig("partial-amnesiac"), ForgetRequest(classes=("3",)))
    with pytest.raises(DataNotFoundError):
        forget_run(run_copy, ForgetConfig("retrain"), ids(9))
    assert Run.open(run_copy).versions() == [0, 1]


def test_a_method_registered_anywhere_shows_up_in_the_plan(run_copy, cli, monkeypatch):
    """Adding a method is one file: its `estimate` hook gives --dry-run its cost."""
    from dataclasses import dataclass

    from unlearn_cli.methods import METHODS, Cost, ForgetOutcome, Method
    from unlearn_cli.methods.base import register

    @dataclass(frozen=True)
    class TwiceParams:
        passes: int = 2
        constraints = {}

    def estimate(facts, params):
        return facts.passes(params.passes, facts.n_forget)

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # restored afterwards
    register(Method("twice", TwiceParams, lambda ctx, p: ForgetOutcome(), "a test method",
                    estimate=estimate))  # fmt: skip
    plan = json.loads(cli("forget", run_copy, "-m", "auto", "--ids", "4,5,6", "--dry-run",
                          "--json").out)  # fmt: skip
    by = {m["method"]: m for m in plan["methods"]}
    assert by["twice"]["training_steps"] == 2 and by["twice"]["training_samples"] == 6
    assert by["amnesiac"]["training_steps"] == 0 and Cost() == Cost(0, 0)
    assert "auto" not in by  # its choice is the plan's `auto`
