"""Optimization-based unlearning, layer-wise partial masks and the stopping rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn_cli.methods.optimize import ascent_loss, bounded_loss, with_retained
from unlearn_cli.methods.partial_update import PartialParams, layer_fractions
from unlearn_cli.models.base import ModelSpec, create_model
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.param_mask import ParamMask
from unlearn_cli.predict import accuracy
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store.layout import kept_count
from unlearn_cli.training import Batch

SAMPLES = ForgetRequest(ids=tuple(range(0, 60, 3)))


def lenet():
    return create_model("lenet", ModelSpec(channels=1, image_size=8, num_classes=10))


# -- the schedule gives the documented fractions ------------------------------------
def test_depth_schedule_rises_linearly_from_fraction_min_to_fraction():
    model = lenet()
    fractions = layer_fractions(model, PartialParams(fraction=0.4, fraction_min=0.1))
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in fractions))
    by_module = {n.rsplit(".", 1)[0]: f for n, f in fractions.items()}
    assert by_module[modules[0]] == pytest.approx(0.1)
    assert by_module[modules[-1]] == pytest.approx(0.4)
    steps = np.diff([by_module[m] for m in modules])
    assert np.allclose(steps, steps[0]) and steps[0] > 0


def test_depth_schedule_defaults_fraction_min_to_a_tenth():
    fractions = layer_fractions(lenet(), PartialParams(fraction=0.5))
    assert min(fractions.values()) == pytest.approx(0.05)
    assert max(fractions.values()) == pytest.approx(0.5)


def test_uniform_schedule_gives_every_tensor_the_fraction():
    fractions = layer_fractions(lenet(), PartialParams(fraction=0.3, schedule="uniform"))
    assert set(fractions.values()) == {0.3}


# -- partial updates: the rest stays bit-identical ------------------------------------
@pytest.mark.parametrize("method", ["optimize", "label-flip"])
@pytest.mark.parametrize("select", ["random", "saliency"])
def test_partial_update_leaves_unmasked_parameters_bit_identical(run_copy, method, select):
    pairs = {"partial": True, "select": select, "fraction": 0.2, "stop": "budget", "epochs": 2}
    result = forget_run(run_copy, ForgetConfig(method, pairs, seed=3), SAMPLES)
    run = Run.open(run_copy)
    before, after = run.load_state(0), run.load_state(result["version"])
    model = lenet()
    fractions = layer_fractions(model, PartialParams(fraction=0.2))
    changed_total = 0
    for name, p in model.named_parameters():
        changed = before[name] != after[name]
        allowed = kept_count(fractions[name], p.numel())
        assert int(changed.sum()) <= allowed, name
        changed_total += int(changed.sum())
    assert changed_total > 0
    reported = result["details"]["updated_fraction"]
    for name, p in model.named_parameters():
        expected = kept_count(fractions[name], p.numel()) / p.numel()
        assert reported[name] == pytest.approx(expected, abs=1e-6)


def test_the_mask_holds_against_weight_decay_and_momentum():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    mask = {n: torch.rand(p.shape) < 0.3 for n, p in model.named_parameters()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    pm = ParamMask(mask, frozen)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 6)).pow(2).sum().backward()
        pm.grad_hook(model)
        opt.step()
        pm.restore(model)
    for name, p in model.named_parameters():
        assert torch.equal(p[~mask[name]], frozen[name][~mask[name]])
        assert not torch.equal(p[mask[name]], frozen[name][mask[name]])


def test_saliency_picks_the_largest_gradients(run_copy):
    from unlearn_cli.methods import METHODS
    from unlearn_cli.methods.partial_update import build_mask, forget_saliency
    from unlearn_cli.ops.forget import make_context, prepare
    from unlearn_cli.progress import NullProgress

    prep = prepare(run_copy, ForgetConfig("optimize"), SAMPLES)
    ctx = make_context(prep, NullProgress())
    params = METHODS.get("optimize").make_params({"partial": True, "schedule": "uniform"})
    mask = build_mask(ctx, params)
    scores = forget_saliency(ctx)
    for name, m in mask.masks.items():
        chosen, rest = scores[name][m], scores[name][~m]
        if len(rest):
            assert chosen.min() >= rest.max()


# -- objectives -------------------------------------------------------------------
def test_bounded_loss_matches_its_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = logits.softmax(1)
    entropy = -(p * p.log()).sum(1)
    expected = (-torch.log(1 - p[[0, 1], y] + 0.05) - 0.2 * entropy).mean()
    assert bounded_loss(logits, y, 0.05, 0.2).item() == pytest.approx(expected.item())


def test_bounded_loss_is_bounded_below():
    logits = torch.tensor([[-50.0, 10.0, 0.0]])
    assert bounded_loss(logits, torch.tensor([0]), 0.05, 0.0).item() == pytest.approx(
        -math.log(1.05), abs=1e-6
    )


def test_ascent_stops_pushing_samples_past_the_cap():
    logits = torch.tensor([[-20.0, 5.0], [1.0, 0.0]], requires_grad=True)
    ascent_loss(logits, torch.tensor([0, 0]), max_loss=5.0).backward()
    assert torch.all(logits.grad[0] == 0) and torch.any(logits.grad[1] != 0)


def test_ascent_with_a_huge_learning_rate_stays_finite(run_copy):
    pairs = {"objective": "ascent", "lr": 50, "stop": "budget", "epochs": 3}
    result = forget_run(run_copy, ForgetConfig("optimize", pairs), SAMPLES)
    state = Run.open(run_copy).load_state(result["version"])
    assert all(torch.isfinite(v).all() for v in state.values())


def test_retained_descent_adds_as_many_retained_samples_per_batch():
    retain = torch.arange(100, 200)
    batches = [Batch(0, 0, torch.tensor([1, 2, 3])), Batch(1, 0, torch.tensor([4]))]
    out = list(with_retained(retain, seed=0)(iter(batches)))
    assert [len(b.ids) for b in out] == [6, 2]
    assert torch.equal(out[0].ids[:3], torch.tensor([1, 2, 3]))
    assert bool(torch.isin(out[0].ids[3:], retain).all())


def test_optimize_with_retained_descent_runs(run_copy):
    result = forget_run(
        run_copy,
        ForgetConfig("optimize", {"retain_weight": 1, "stop": "budget", "epochs": 1}),
        SAMPLES,
    )
    assert result["details"]["steps"] == 1


# -- stopping rules -----------------------------------------------------------------
def _acc(run_copy, version, ids):
    run = Run.open(run_copy)
    data = run.load_dataset()
    ids = torch.as_tensor(ids)
    return accuracy(run.load_model(version), data.x_train[ids], data.y_train[ids])


def test_budget_runs_every_epoch(run_copy):
    result = forget_run(
        run_copy, ForgetConfig("optimize", {"stop": "budget", "epochs": 3}), SAMPLES
    )
    assert result["details"]["steps"] == 3  # 20 samples, batch 32: one step per epoch
    assert result["details"]["stopping"]["reason"] == "budget"


def test_sample_request_stops_near_held_out_accuracy(run_copy):
    # Samples the model fits (all right, above held-out accuracy), so there is work to do.
    run = Run.open(run_copy)
    data = run.load_dataset()
    right = run.load_model(0)(data.x_train).argmax(1) == data.y_train
    fitted = ForgetRequest(ids=tuple(right.nonzero().flatten()[:20].tolist()))
    pairs = {"lr": 0.01, "check_every": 1, "epochs": 50, "max_retain_drop": 1.0}
    result = forget_run(run_copy, ForgetConfig("optimize", pairs), fitted)
    stopping = result["details"]["stopping"]
    assert stopping["start"]["forget_acc"] > stopping["start"]["heldout_acc"]
    assert stopping["request"] == "sample"
    assert stopping["reason"].startswith("forget accuracy reached held-out accuracy")
    assert result["details"]["steps"] < 50
    end = stopping["end"]
    assert abs(end["forget_acc"] - end["heldout_acc"]) <= 0.2
    assert _acc(run_copy, result["version"], result["ids"]["newly_forgotten"]) == pytest.approx(
        end["forget_acc"]
    )


def test_class_request_stops_at_the_forget_target(run_copy):
    pairs = {"lr": 0.01, "check_every": 1, "max_retain_drop": 1, "epochs": 20}
    result = forget_run(run_copy, ForgetConfig("label-flip", pairs), ForgetRequest(classes=("3",)))
    stopping = result["details"]["stopping"]
    assert stopping["request"] == "class"
    assert stopping["reason"] == "forget accuracy reached forget_target"
    assert stopping["end"]["forget_acc"] <= 0.01
    assert _acc(run_copy, result["version"], result["ids"]["newly_forgotten"]) <= 0.01


@pytest.mark.parametrize("patience", [0, 2])
def test_a_forget_accuracy_that_stops_falling_ends_after_patience_epochs(run_copy, patience):
    # A learning rate too small to move the model: forget accuracy never reaches a new low.
    pairs = {"lr": 1e-7, "max_retain_drop": 1, "forget_target": 0, "epochs": 6}
    pairs["patience"] = patience
    result = forget_run(run_copy, ForgetConfig("label-flip", pairs), ForgetRequest(classes=("3",)))
    stopping = result["details"]["stopping"]
    n = result["ids"]["requested"]
    per_epoch = -(-n // 32)  # the fixture's batch of 32
    if patience:
        assert stopping["reason"] == "no new lowest forget accuracy in 2 epochs (patience)"
        assert result["details"]["steps"] == 2 * per_epoch
    else:  # 0: the rule is off, every epoch runs
        assert stopping["reason"] == "budget"
        assert result["details"]["steps"] == 6 * per_epoch
    assert stopping["end"]["forget_acc"] == stopping["start"]["forget_acc"]


def test_patience_leaves_a_sample_request_alone(run_copy):
    # Samples the model fits, and a learning rate too small to move it: only the budget ends it.
    run = Run.open(run_copy)
    data = run.load_dataset()
    right = run.load_model(0)(data.x_train).argmax(1) == data.y_train
    fitted = ForgetRequest(ids=tuple(right.nonzero().flatten()[:20].tolist()))
    pairs = {"lr": 1e-7, "max_retain_drop": 1, "epochs": 6, "patience": 2}
    result = forget_run(run_copy, ForgetConfig("label-flip", pairs), fitted)
    assert result["details"]["stopping"]["request"] == "sample"
    assert result["details"]["stopping"]["reason"] == "budget"
    assert result["details"]["steps"] == 6  # 20 samples, batch 32: one step per epoch


def test_class_request_goes_back_when_other_classes_suffer(run_copy):
    pairs = {"lr": 0.5, "check_every": 1, "max_retain_drop": 0.0, "forget_target": 0, "epochs": 5}
    result = forget_run(run_copy, ForgetConfig("label-flip", pairs), ForgetRequest(classes=("3",)))
    stopping = result["details"]["stopping"]
    assert stopping["reason"].startswith("held-out accuracy dropped")
    assert stopping["end"]["heldout_acc"] >= stopping["start"]["heldout_acc"]
    # it went back to the model it started from: nothing was forgotten, and it says so
    assert result["noop"] is True and result["noop_reason"].startswith("label-flip: held-out")
