"""The contract every registered unlearning method keeps, parametrised over the registry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from unlearn_cli.methods import METHODS
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.params import Interval
from unlearn_cli.predict import accuracy
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run

# Small budgets keep the suite fast; each method's own defaults are tested elsewhere.
# The stopping rules are tested on their own (test_optimize.py): here a fixed budget.
FAST = {
    "retrain": {"epochs": 1},
    "finetune": {"epochs": 1},
    "label-flip": {"epochs": 1, "stop": "budget"},
    "optimize": {"epochs": 1, "stop": "budget"},
    "pgu": {"epochs": 1, "stop": "budget"},
}
REQUEST = ForgetRequest(classes=("3",))


def files(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def method_runs(trained_run, tmp_path_factory):
    """One copy of the shared run per method, each forgotten twice with the same request."""
    import shutil

    results = {}
    for name in METHODS.names():
        run = tmp_path_factory.mktemp(name) / "run"
        shutil.copytree(trained_run, run)
        version0 = {k: v for k, v in files(run).items() if k.startswith("versions/0000")}
        first = forget_run(run, ForgetConfig(name, FAST.get(name), from_version=0, seed=7), REQUEST)
        second = forget_run(
            run, ForgetConfig(name, FAST.get(name), from_version=0, seed=7), REQUEST
        )
        results[name] = (run, version0, first, second)
    return results


@pytest.mark.parametrize("name", METHODS.names())
def test_input_version_is_never_modified(method_runs, name):
    run, version0, _, _ = method_runs[name]
    after = {k: v for k, v in files(run).items() if k.startswith("versions/0000")}
    assert after == version0


@pytest.mark.parametrize("name", METHODS.names())
def test_output_has_the_same_architecture(method_runs, name):
    run, _, first, _ = method_runs[name]
    r = Run.open(run)
    before, after = r.load_state(0), r.load_state(first["version"])
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    assert first["model_hash_after"] != first["model_hash_before"]


@pytest.mark.parametrize("name", METHODS.names())
def test_deterministic_under_a_seed(method_runs, name):
    _, _, first, second = method_runs[name]
    assert first["model_hash_after"] == second["model_hash_after"]


@pytest.mark.parametrize("name", METHODS.names())
def test_forget_accuracy_does_not_rise(method_runs, name):
    run, _, first, _ = method_runs[name]
    r = Run.open(run)
    data = r.load_dataset()
    ids = torch.tensor(first["ids"]["newly_forgotten"])
    x, y = data.x_train[ids], data.y_train[ids]
    before = accuracy(r.load_model(0), x, y)
    after = accuracy(r.load_model(first["version"]), x, y)
    assert before > 0.5 and after <= before


@pytest.mark.parametrize("name", METHODS.names())
def test_invalid_parameters_are_refused(run_copy, cli, name):
    method = METHODS.get(name)
    constraints = method.params.constraints
    field, bad = next(
        (f.name, -1)
        for f in dataclasses.fields(method.params)
        if any(isinstance(c, Interval) for c in np.atleast_1d(constraints.get(f.name)))
    )
    result = cli("forget", run_copy, "-m", name, "--ids", "1", "-p", f"{field}={bad}")
    assert result.code == 1
    assert f"The '{field}' parameter of {name} must be" in result.err
    assert Run.open(run_copy).versions() == [0]


def test_label_flip_labels_are_wrong_and_the_true_labels_untouched():
    from unlearn_cli.methods.label_flip import flipped_labels

    y = torch.arange(100) % 7
    ids = torch.arange(0, 100, 3)
    flipped = flipped_labels(y, ids, 7, torch.Generator().manual_seed(0))
    assert (flipped[ids] != y[ids]).all() and flipped[ids].max() < 7
    keep = torch.ones(100, dtype=torch.bool)
    keep[ids] = False
    assert torch.equal(flipped[keep], y[keep]) and torch.equal(y, torch.arange(100) % 7)


def test_label_flip_mixes_in_retained_samples(run_copy):
    result = forget_run(
        run_copy,
        ForgetConfig("label-flip", {"retain_ratio": 2, "epochs": 1, "stop": "budget"}),
        ForgetRequest(ids=(1, 2, 3)),
    )
    assert result["details"]["retained_mixed_in"] == 6


def test_a_method_that_changes_nothing_writes_no_version_and_says_so(run_copy, cli):
    """Forget accuracy already at held-out accuracy: the accuracy rule stops before its first
    step. The model is unchanged, so nothing was forgotten: no version, and stderr says why."""
    before = sorted(p.name for p in (run_copy / "versions").iterdir())
    result = cli("forget", run_copy, "-m", "optimize", "--ids", "1,2,3", "--json")
    doc = json.loads(result.out)
    assert result.code == 0 and doc["noop"] is True and doc["version"] == 0
    assert "nothing to train" in doc["noop_reason"] and doc["ids"]["newly_forgotten"] == []
    assert "no version written" in result.err and "nothing to train" in result.err
    assert sorted(p.name for p in (run_copy / "versions").iterdir()) == before
    again = cli("forget", run_copy, "-m", "replay", "--ids", "1,2,3", "--json")
    assert json.loads(again.out)["noop"] is False  # the ids were not recorded as forgotten
