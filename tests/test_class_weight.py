"""Class-weighted loss (`train --class-weight`): the weights, their refusals, and that
train, retrain, every method that trains on samples with their own labels, pruning and
the shadow models all weigh as the run did."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli import training
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.methods import replay as replay_module
from unlearn_cli.train_config import TrainConfig, class_weights
from unlearn_cli.training import Batch, Hooks, fit

WEIGHTS = "1,2,3,4,5,6,7,8,9,10"
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seed", "2"]


def test_balanced_weighs_classes_by_their_training_counts():
    y = torch.tensor([0, 0, 0, 1])
    w = class_weights(TrainConfig(class_weight="balanced"), y, 3)
    # n / (classes * count): 4 / 9 and 4 / 3; a class without samples weighs 0
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
    assert class_weights(TrainConfig(), y, 3) is None
    given = class_weights(TrainConfig(class_weight="0.5, 2,0"), y, 3)
    torch.testing.assert_close(given, torch.tensor([0.5, 2.0, 0.0]))


@pytest.mark.parametrize("spec", ["1,2", "a,b,c", "1,-1,1", "0,0,0", "", "1,inf,1"])
def test_bad_weights_are_refused(spec):
    with pytest.raises(InvalidParameterError, match="--class-weight"):
        class_weights(TrainConfig(class_weight=spec), torch.tensor([0, 1, 2]), 3)


def test_the_cli_refuses_bad_weights_before_writing_anything(cli, tmp_path):
    out = tmp_path / "run"
    result = cli(*TRAIN, "--out", out, "--class-weight", "1,2")
    assert result.code != 0
    assert "10 non-negative numbers" in result.err and "--class-weight balanced" in result.err
    assert not out.exists()


def test_a_batch_that_weighs_nothing_does_not_move_the_model():
    """Only samples of a weight-0 class: loss 0 and no step (not 0/0)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = Batch(0, 0, torch.tensor([0, 1, 2]))
    hooks = Hooks(class_weights=torch.tensor([0.0, 1.0, 1.0]))
    result = fit(model, opt, x, y, iter([batch]), hooks)
    assert result.last_loss == 0.0
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # on a mixed batch the loss is torch's weighted mean
    w = torch.tensor([0.5, 1.0, 3.0])
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y, weight=w))
    got = fit(model, opt, x, y, iter([Batch(1, 0, torch.arange(6))]), Hooks(class_weights=w))
    assert got.last_loss == pytest.approx(want, rel=1e-6)


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    from unlearn_cli.cli.app import main

    out = tmp_path_factory.mktemp("weighted") / "run"
    assert main([*TRAIN, "--out", str(out), "--class-weight", WEIGHTS, "--covariance"]) == 0
    return out


def test_the_run_records_its_weights(weighted_run, cli, tmp_path):
    meta = json.loads((weighted_run / "run.json").read_text())
    assert meta["config"]["class_weight"] == WEIGHTS
    assert meta["class_weights"] == [float(w) for w in WEIGHTS.split(",")]
    result = cli(*TRAIN, "--out", tmp_path / "b", "--class-weight", "balanced", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert len(doc["class_weights"]) == 10 and min(doc["class_weights"]) > 0.9


@pytest.mark.parametrize(
    ("args", "weighted"),
    [
        (("forget", "-m", "retrain", "--ids", "3,17"), True),
        (("forget", "-m", "finetune", "--ids", "3,17"), True),
        (("forget", "-m", "replay", "--ids", "3,17"), True),
        (("forget", "-m", "amnesiac", "-p", "finetune_epochs=1", "--ids", "3,17"), True),
        (("prune", "--sparsity", "0.5", "--rounds", "1"), True),
        (("eval", "--ids", "3,17", "--shadows", "2"), True),
        # label-flip trains on flipped labels with its own objective: unweighted
        (("forget", "-m", "label-flip", "--ids", "3,17"), False),
    ],
    ids=["retrain", "finetune", "replay", "amnesiac+ft", "prune", "shadows", "label-flip"],
)
def test_training_after_the_run_weighs_as_the_run_did(
    weighted_run, cli, tmp_path, monkeypatch, args, weighted
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(weighted_run, run)
    seen: list[torch.Tensor] = []
    plain_fit = training.fit

    def spy(model, optimizer, x, y, batches, hooks=training.Hooks(), progress=None):
        if hooks.class_weights is not None:
            seen.append(hooks.class_weights)
        return plain_fit(model, optimizer, x, y, batches, hooks, progress)

    monkeypatch.setattr(training, "fit", spy)
    monkeypatch.setattr(replay_module, "fit", spy)
    command, *rest = args
    result = cli(command, run, *rest, "--json")
    assert result.code == 0, result.err
    assert bool(seen) == weighted
    for w in seen:
        assert w.tolist() == [float(v) for v in WEIGHTS.split(",")]


def test_a_custom_loop_declares_its_weights(tmp_path):
    """`record(class_weight=...)`: checked against the dataset's classes up front, and kept
    in the run so replay and retrain weigh as the user's loop did."""
    import unlearn_cli as ul
    from unlearn_cli.models import ModelSpec, create_model
    from unlearn_cli.rundir import Run

    model = create_model("mlp", ModelSpec(1, 8, 10))
    common = {"builder": "mlp", "dataset": "digits", "lr": 0.01, "batch_size": 32, "epochs": 1,
              "momentum": 0.9}  # fmt: skip
    with pytest.raises(InvalidParameterError, match="--class-weight"):
        ul.record(tmp_path / "bad", model, class_weight="1,2", **common)
    assert not (tmp_path / "bad").exists()
    with ul.record(tmp_path / "run", model, class_weight="balanced", **common) as rec:
        rec.step(ids=[0, 1], epoch=0)
    assert Run.open(tmp_path / "run").meta["config"]["class_weight"] == "balanced"
