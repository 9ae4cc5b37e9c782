"""`unlearn eval`: metric values, membership inference, gates, the JSON interface, errors."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from rich.console import Console

from unlearn_cli.cli.console import GATE_EXIT
from unlearn_cli.cli.eval import render_eval
from unlearn_cli.metrics import (
    average_gap,
    class_accuracy,
    fit_logistic,
    js_divergence,
    loss_auc,
    member_rate,
    roc_auc,
    roc_points,
    sample_features,
    standard_scaling,
)
from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

IDS = "1,2,3,40,41"

# The JSON interface (documented in the README): adding a key is fine, renaming is not.
TOP_KEYS = {
    "schema", "run", "version", "dataset", "model", "class_names", "forget_set", "models",
    "reference", "gap", "sparsity", "mask_overlap", "cost", "warnings", "gates", "passed", "lira",
    "evidence",
}  # fmt: skip
MODEL_KEYS = {
    "forget_acc", "ua", "retain_acc", "test_acc", "member_rate", "loss_auc",
    "test_acc_per_class",
}  # fmt: skip
GAP_KEYS = {
    "forget_acc", "retain_acc", "test_acc", "member_rate", "average", "js_divergence",
    "weight_distance",
}  # fmt: skip
COST_KEYS = {"method", "unlearn_seconds", "bytes_read", "reference_seconds", "speedup"}


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    """Version 1: partial-amnesiac on IDS; version 2: retrain on IDS (the reference)."""
    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(trained_run, run)
    request = ForgetRequest(ids=tuple(int(i) for i in IDS.split(",")))
    forget_run(run, ForgetConfig("partial-amnesiac"), request)
    forget_run(run, ForgetConfig("retrain", {"epochs": 1}, from_version=0), request)
    return run


# -- metric values on hand-built predictions --------------------------------------------
def test_sample_features_match_their_definitions():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]])
    loss, conf, entropy, mentr = sample_features(logits, torch.tensor([0]))[0]
    assert conf == pytest.approx(0.7)
    assert loss == pytest.approx(-math.log(0.7))
    assert entropy == pytest.approx(
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    )
    expected = -(0.3) * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    assert mentr == pytest.approx(expected)


def test_js_divergence_is_zero_for_equal_outputs_and_one_bit_for_disjoint_ones():
    a = torch.tensor([[10.0, -10.0], [0.0, 0.0]])
    assert js_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    p, q = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    assert js_divergence(p, q) == pytest.approx(1.0, abs=1e-6)


def test_class_accuracy_and_average_gap():
    pred, y = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert class_accuracy(pred, y, 4) == [1.0, 1.0, 0.5, None]
    a = {"forget_acc": 0.1, "retain_acc": 0.9, "test_acc": 0.8, "member_rate": 0.5}
    b = {"forget_acc": 0.3, "retain_acc": 0.95, "test_acc": 0.8, "member_rate": 0.4}
    gap = average_gap(a, b)
    assert gap["forget_acc"] == pytest.approx(0.2)
    assert gap["average"] == pytest.approx((0.2 + 0.05 + 0 + 0.1) / 4)


def test_the_attack_calls_an_overfit_models_members_members():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (2000,), generator=gen)
    seen = torch.randn(2000, 10, generator=gen) + 12 * torch.nn.functional.one_hot(y, 10)
    unseen = torch.randn(2000, 10, generator=gen) * 2  # no idea of the label
    members, nonmembers = sample_features(seen[:1000], y[:1000]), sample_features(unseen, y)
    forget = sample_features(seen[1000:], y[1000:])  # memorised like the members
    assert member_rate(members, nonmembers, forget, seed=0) > 0.95
    assert loss_auc(forget[:, 0], nonmembers[:, 0]) > 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_attack_and_the_aucs_agree_with_scikit_learn(seed):
    """member_rate, the AUCs and the ROC points are our own (importing scikit-learn took
    2.2 s of every eval); scikit-learn, installed with medmnist, is the oracle here."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(0.3, 1, (800, 4)), rng.normal(0, 1.2, (800, 4))] * [1, 5, 0.1, 30]
    y = np.r_[np.ones(800), np.zeros(800)]
    mean, scale = standard_scaling(x)
    w, b = fit_logistic((x - mean) / scale, y)
    sk = LogisticRegression(max_iter=1000, tol=1e-10).fit(StandardScaler().fit_transform(x), y)
    np.testing.assert_allclose(w, sk.coef_[0], atol=1e-6)
    assert b == pytest.approx(sk.intercept_[0], abs=1e-6)

    pos, neg = rng.normal(0.5, 1, 300), rng.normal(0, 1, 2000)
    for p_, n_ in ((pos, neg), (np.round(pos, 1), np.round(neg, 1))):  # distinct, and ties
        labels, scores = np.r_[np.ones(len(p_)), np.zeros(len(n_))], np.r_[p_, n_]
        assert roc_auc(p_, n_) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        ours = roc_points(p_, n_)
        np.testing.assert_allclose(ours[0], fpr)
        np.testing.assert_allclose(ours[1], tpr)
    assert roc_auc(np.array([np.inf, 1.0]), np.array([np.inf, 0.0])) == 0.625  # ties at inf


def test_an_untrained_model_leaks_nothing(trained_run):
    run = Run.open(trained_run)
    data = run.load_dataset()
    model = run.new_model()
    model.load_state_dict(run.load_state(None))
    from unlearn_cli.predict import predict_logits

    f = sample_features(predict_logits(model, data.x_train[:300]), data.y_train[:300])
    t = sample_features(predict_logits(model, data.x_test), data.y_test)
    assert abs(loss_auc(f[:, 0], t[:, 0]) - 0.5) < 0.08
    # the feature attack's advantage (members called member minus non-members called member)
    members = sample_features(predict_logits(model, data.x_train[300:]), data.y_train[300:])
    t = t[np.random.default_rng(0).permutation(len(t))]
    held_out_t, fit_t = t[: len(t) // 2], t[len(t) // 2 :]
    advantage = member_rate(members, fit_t, f, 0) - member_rate(members, fit_t, held_out_t, 0)
    assert abs(advantage) < 0.1


# -- the whole evaluation -----------------------------------------------------------------
def test_eval_json_keys_are_stable(evaluated_run, cli):
    result = cli("eval", evaluated_run, "--version", "1", "--reference", "2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert set(doc) == TOP_KEYS
    assert set(doc["models"]) == {"original", "version", "reference"}
    for metrics in doc["models"].values():
        assert set(metrics) == MODEL_KEYS
    assert set(doc["gap"]) == GAP_KEYS and set(doc["cost"]) == COST_KEYS
    assert doc["forget_set"] == {
        "source": "ledger",
        "size": 5,
        "classes": doc["forget_set"]["classes"],
    }
    assert doc["cost"]["method"] == "partial-amnesiac" and doc["cost"]["speedup"] > 1
    assert doc["passed"] is True and doc["gates"] == [] and doc["warnings"] == []


def test_metrics_agree_with_a_direct_computation(evaluated_run):
    result, _ = evaluate(evaluated_run, 1)
    run = Run.open(evaluated_run)
    data = run.load_dataset()
    model = run.load_model(1)
    ids = torch.tensor([int(i) for i in IDS.split(",")])
    from unlearn_cli.predict import accuracy

    v = result["models"]["version"]
    assert v["forget_acc"] == pytest.approx(accuracy(model, data.x_train[ids], data.y_train[ids]))
    assert v["test_acc"] == pytest.approx(accuracy(model, data.x_test, data.y_test))
    assert v["ua"] == pytest.approx(1 - v["forget_acc"])


def test_a_reference_to_itself_has_no_gap(evaluated_run):
    result, _ = evaluate(evaluated_run, 1, reference="1")
    assert result["gap"]["average"] == 0 and result["gap"]["js_divergence"] == pytest.approx(0)
    assert result["gap"]["weight_distance"]["l2"] == 0


@pytest.mark.parametrize(
    ("gate", "limit", "code"),
    [("--max-forget-acc", "1.0", 0), ("--max-forget-acc", "0.0", GATE_EXIT),
     ("--min-test-acc", "0.0", 0), ("--min-test-acc", "1.0", GATE_EXIT)],
)  # fmt: skip
def test_gates_exit_3_when_they_fail(evaluated_run, cli, gate, limit, code):
    result = cli("eval", evaluated_run, "--version", "1", gate, limit, "--json")
    assert result.code == code
    doc = json.loads(result.out)
    assert doc["passed"] is (code == 0)
    if code:
        assert f"gate failed: {gate} " in result.err


def test_avg_gap_gate_needs_a_reference(evaluated_run, cli):
    result = cli("eval", evaluated_run, "--max-avg-gap", "0.1")
    assert result.code == 1 and "--reference" in result.err
    result = cli("eval", evaluated_run, "--version", "1", "--reference", "2", "--max-avg-gap", "1")
    assert result.code == 0


def test_a_gate_outside_zero_to_one_is_refused(evaluated_run, cli):
    result = cli("eval", evaluated_run, "--max-forget-acc", "5")
    assert result.code == 1 and "fraction between 0 and 1" in result.err


def test_a_reference_with_another_architecture_is_refused(evaluated_run, tmp_path, cli):
    other = tmp_path / "mlp"
    train_run(TrainConfig(model="mlp", epochs=1), RecordConfig(), other)
    result = cli("eval", evaluated_run, "--version", "1", "--reference", other)
    assert result.code == 1
    assert "different architecture" in result.err and "retrain" in result.err


def test_a_bad_reference_version_is_refused(evaluated_run, cli):
    assert cli("eval", evaluated_run, "--reference", "99").code == 1
    result = cli("eval", evaluated_run, "--reference", f"{evaluated_run}@x")
    assert result.code == 1 and "RUN@VERSION" in result.err


def test_a_reference_that_forgot_other_samples_is_flagged(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    forget_run(run, ForgetConfig("retrain", {"epochs": 1}, from_version=0), ForgetRequest(ids=(7,)))
    result, _ = evaluate(run, 1, reference="3")
    assert result["warnings"] and "not the 5" in result["warnings"][0]


def test_version_zero_needs_a_forget_set(evaluated_run, cli):
    result = cli("eval", evaluated_run, "--version", "0")
    assert result.code == 1 and "has forgotten nothing" in result.err
    result = cli("eval", evaluated_run, "--version", "0", "--class", "3", "--json")
    doc = json.loads(result.out)
    assert result.code == 0 and doc["forget_set"]["source"] == "request"
    assert doc["forget_set"]["classes"] == [3] and "original" not in doc["models"]


def test_out_writes_the_same_document(evaluated_run, tmp_path, cli):
    path = tmp_path / "eval.json"
    result = cli("eval", evaluated_run, "--version", "1", "--out", path, "--json")
    assert json.loads(path.read_text()) == json.loads(result.out)


def test_plot_writes_a_png(evaluated_run, tmp_path, cli):
    pytest.importorskip("matplotlib")
    path = tmp_path / "eval.png"
    result = cli("eval", evaluated_run, "--version", "1", "--reference", "2", "--plot", path)
    assert result.code == 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install_it(evaluated_run, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli("eval", evaluated_run, "--plot", tmp_path / "x.png")
    assert result.code == 1 and "unlearn-cli[plot]" in result.err
    assert not (tmp_path / "x.png").exists()


def test_the_table_renders_on_a_narrow_console(evaluated_run):
    result, _ = evaluate(evaluated_run, 1, reference="2", gates={"max_forget_acc": 1.0})
    buffer = io.StringIO()
    render_eval(result, Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    for label in ("forget acc %", "retained acc %", "MIA member rate", "MIA loss AUC", "gap"):
        assert label in text
    assert "gate --max-forget-acc 1" in text and "pass" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_an_output_in_a_missing_folder_is_refused_before_any_work(evaluated_run, tmp_path, cli):
    result = cli("eval", evaluated_run, "--out", tmp_path / "nope" / "e.json")
    assert result.code == 1 and "does not exist" in result.err
