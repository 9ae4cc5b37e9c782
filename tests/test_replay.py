"""Replay: subtract the affected steps, re-run them without the forgotten samples; and auto."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from unlearn_cli.errors import DataNotFoundError, RequestError
from unlearn_cli.methods import METHODS, RequestFacts
from unlearn_cli.methods import replay as replay_module
from unlearn_cli.methods.auto import MEMORIZED_OPTIMIZE, AutoParams, choose
from unlearn_cli.methods.replay import ReplayParams, replay_batches, rerun
from unlearn_cli.methods.support import subtract_flat, sum_current_records
from unlearn_cli.ops.forget import ForgetConfig, forget_run, make_context, prepare
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.ops.verify import verify_run
from unlearn_cli.progress import NullProgress
from unlearn_cli.requests import ForgetRequest, takes_whole_classes
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

IDS = ForgetRequest(ids=(3, 17, 256))


def context(run, request=IDS, **config):
    prep = prepare(run, ForgetConfig("replay", **config), request)
    return make_context(prep, NullProgress())


def test_a_request_touching_no_step_leaves_the_model_as_it_was(run_copy):
    ctx = context(run_copy)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    ctx.affected_steps = np.empty(0, np.int64)
    outcome = METHODS.get("replay").forget(ctx, ReplayParams())
    assert outcome.details["steps_replayed"] == 0 and outcome.subtracted_steps.size == 0
    for name, value in ctx.model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("class_weight", [None, "1,2,3,4,5,6,7,8,9,10"])
def test_replaying_unchanged_batches_reproduces_the_trajectory(tmp_path, class_weight):
    """On a dense float32 record of plain SGD, θT minus the last steps' updates, replayed on
    the same batches (nothing removed), returns to θT; with the run's class weights too."""
    run = tmp_path / "dense"
    config = TrainConfig(
        model="mlp", epochs=2, batch_size=128, momentum=0.0, lr=0.05, class_weight=class_weight
    )
    train_run(config, RecordConfig(keep=1.0, delta_dtype="float32"), run)
    ctx = context(run)
    store = ctx.store
    assert store is not None
    last = np.arange(store.info().committed_steps - 5, store.info().committed_steps)
    total, _ = sum_current_records(ctx, last)
    subtract_flat(ctx.model, store.layout, total)
    batches, emptied = replay_batches(store, last, np.empty(0, np.int64))
    assert emptied == 0 and [b.step for b in batches] == last.tolist()
    rerun(ctx, store, batches, ReplayParams())
    final = Run.open(run).load_state(0)
    for name, value in ctx.model.state_dict().items():
        torch.testing.assert_close(value, final[name], atol=1e-5, rtol=0)


def test_forgotten_ids_never_enter_a_replayed_batch(run_copy, monkeypatch):
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(5, 6)))  # earlier ids too
    forgotten = torch.tensor([3, 17, 256, 5, 6])
    seen = []
    real_fit = replay_module.fit

    def checking_fit(model, optimizer, x, y, batches, hooks, progress=None):
        def loss(logits, y, ids):
            seen.append(ids.clone())
            assert not torch.isin(ids, forgotten).any(), "a forgotten id was replayed"
            return torch.nn.functional.cross_entropy(logits, y)

        return real_fit(model, optimizer, x, y, batches, replace(hooks, loss_fn=loss), progress)

    monkeypatch.setattr(replay_module, "fit", checking_fit)
    result = forget_run(run_copy, ForgetConfig("replay"), IDS)
    assert len(seen) == result["details"]["steps_replayed"] > 0
    assert result["details"]["samples_read"] == sum(len(ids) for ids in seen)


def test_sequential_replays_subtract_the_earlier_replay_record(run_copy):
    first = forget_run(run_copy, ForgetConfig("replay"), IDS)
    run = Run.open(run_copy)
    index = run.store().index()
    step = first["steps"]["subtracted"][0]
    neighbour = int(next(i for i in index.batch(step) if i not in (3, 17, 256)))
    second = forget_run(run_copy, ForgetConfig("replay"), ForgetRequest(ids=(neighbour,)))
    details = second["details"]
    assert details["replayed_records_subtracted"] >= 1
    from unlearn_cli.ledger import ledger_state

    ledger = ledger_state(run.version_dir(second["version"]))
    assert ledger.replayed[step] == second["version"]
    assert set(ledger.forgotten_ids.tolist()) == {3, 17, 256, neighbour}
    # An amnesiac request after them subtracts the replay records too, and the run verifies.
    third = forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(3, 17, 256, 9)))
    assert third["version"] == 3 and verify_run(run_copy)["ok"]


def test_replay_refuses_clearly_when_the_data_is_gone(run_copy, cli, monkeypatch):
    def gone(*args, **kwargs):
        raise DataNotFoundError("the training data is gone", hint="point --data-root at it")

    monkeypatch.setattr(Run, "load_dataset", gone)
    result = cli("forget", run_copy, "-m", "replay", "--ids", "3")
    assert result.code == 1 and "the training data is gone" in result.err
    assert Run.open(run_copy).versions() == [0]
    chosen = forget_run(run_copy, ForgetConfig("auto"), ForgetRequest(ids=(3,)))
    assert chosen["method"] == "partial-amnesiac" and "not at hand" in chosen["auto"]["why"]


def test_replay_matches_retrain_better_than_subtracting(tmp_path):
    """Replay's accuracies are closer to retrain's than partial-amnesiac's (the quality
    claim, measured on MNIST in benchmarks/bench_replay.py), on a run that trains stably."""
    path = tmp_path / "stable"
    train_run(TrainConfig(epochs=8, lr=0.02), RecordConfig(), path)
    request = ForgetRequest(ids=tuple(range(0, 400, 7)))
    runs = {m: forget_run(path, ForgetConfig(m, from_version=0), request) for m in
            ("retrain", "replay", "partial-amnesiac")}  # fmt: skip
    run = Run.open(path)
    data = run.load_dataset()

    def test_acc(method: str) -> float:
        model = run.load_model(runs[method]["version"])
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())

    ref = test_acc("retrain")
    assert abs(test_acc("replay") - ref) < abs(test_acc("partial-amnesiac") - ref) + 1e-9
    assert runs["replay"]["details"]["steps_replayed"] < runs["retrain"]["details"]["steps"]


def facts(share, store=True, data=True, whole=False, flagged=None, beyond=False):
    return RequestFacts(share, store, data, whole, flagged, beyond)


R, OPT, RT = "replay", "optimize", "retrain"


@pytest.mark.parametrize(
    "given,params,ladder",
    [
        # samples: replay while few steps are affected, then retrain
        (facts(0.05), AutoParams(), [R, RT]),
        (facts(0.10), AutoParams(), [R, RT]),
        (facts(0.40), AutoParams(max_replay_share=0.5), [R, RT]),
        # more: nothing without evidence can check a cheaper method, so retrain
        (facts(0.11), AutoParams(), [RT]),
        (facts(None, store=False), AutoParams(), [RT]),
        # the evidence sees most of the samples (memorized): partial optimize, checked by it
        (facts(0.30, flagged=0.9, beyond=True), AutoParams(), [OPT, RT]),
        (facts(None, store=False, flagged=0.9, beyond=True), AutoParams(), [OPT, RT]),
        # it sees few of them (a poisoned set), or none beyond chance (generalized)
        (facts(0.30, flagged=0.11, beyond=True), AutoParams(), [RT]),
        (facts(0.30, flagged=0.02, beyond=False), AutoParams(), [RT]),
        (facts(0.30, flagged=0.3, beyond=True), AutoParams(min_flagged_share=0.25), [OPT, RT]),
        # a class: replay while it is rare (few batches), partial optimize when everywhere
        (facts(0.05, whole=True), AutoParams(), [R, RT]),
        (facts(0.60, whole=True), AutoParams(), [R, RT]),
        (facts(0.61, whole=True), AutoParams(), [OPT, RT]),
        (facts(0.97, whole=True), AutoParams(), [OPT, RT]),
        (facts(0.5, whole=True), AutoParams(max_class_replay_share=0.4), [OPT, RT]),
        (facts(None, store=False, whole=True), AutoParams(), [OPT, RT]),
        (facts(0.9, data=False, whole=True), AutoParams(), ["partial-amnesiac"]),
        (facts(0.05), AutoParams(exact=True), [RT]),
    ],
)
def test_auto_climbs_the_table(given, params, ladder):
    rungs = choose(params, given)
    assert [r.method for r in rungs] == ladder and all(r.why for r in rungs)
    for rung in rungs:
        if rung.method != "optimize":
            assert rung.params == {}
        elif given.whole_class:  # a class everywhere: the layer-wise partial update
            assert rung.params == {"partial": True}
        else:  # memorized samples: toward never-seen confidence, retained samples beside
            assert rung.params == MEMORIZED_OPTIMIZE


def test_auto_without_shadows_names_how_to_get_them():
    (rung,) = choose(AutoParams(), facts(0.3))
    assert rung.method == "retrain" and "unlearn shadows" in rung.why


def test_auto_refuses_when_nothing_can_forget():
    with pytest.raises(RequestError, match="no method can forget here"):
        choose(AutoParams(), RequestFacts(None, False, False, False))


def test_auto_records_its_choice(run_copy):
    result = forget_run(run_copy, ForgetConfig("auto"), IDS)
    assert result["method"] == "replay" and result["auto"]["chosen"] == "replay"
    assert result["auto"]["ladder"] == ["replay", "retrain"]
    assert [a["method"] for a in result["auto"]["attempts"]] == ["replay"]
    assert result["auto"]["attempts"][0]["accepted"] is True
    assert 0 < result["auto"]["facts"]["affected_share"] <= 0.10
    assert result["auto"]["facts"]["whole_class"] is False


def test_a_class_named_by_its_ids_is_a_class_request():
    labels = np.array([0, 1, 1, 2, 1, 0])
    assert takes_whole_classes(labels, np.array([1, 2, 4]), np.empty(0, np.int64))
    assert takes_whole_classes(labels, np.array([1, 4]), np.array([2]))  # one forgotten before
    assert not takes_whole_classes(labels, np.array([1, 4]), np.empty(0, np.int64))
    assert not takes_whole_classes(labels, np.empty(0, np.int64), np.array([1, 2, 4]))


def test_auto_treats_ids_covering_a_class_as_a_class(run_copy):
    data = Run.open(run_copy).load_dataset()
    ids = np.flatnonzero(data.y_train.numpy() == 2)
    result = forget_run(run_copy, ForgetConfig("auto"), ForgetRequest(ids=tuple(ids.tolist())))
    assert result["auto"]["facts"]["whole_class"] is True
    assert "whole class" in result["auto"]["why"]
