"""Sparse models: pruning, masks, forgetting on a sparse version, un-pruning, mask overlap."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.prune import prune_run
from unlearn_cli.ops.pruned import UnpruneParams
from unlearn_cli.ops.pruned import pruned_state as sparse_state
from unlearn_cli.pruning import PruneSchedule, magnitude_masks, mask_overlap, prunable
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store.masks import read_masks, write_masks

CLASS3 = ForgetRequest(classes=("3",))


@pytest.fixture(scope="module")
def pruned_run(trained_run, tmp_path_factory):
    """The shared digits run pruned to 80% in two rounds (version 1), read-only."""
    path = tmp_path_factory.mktemp("pruned") / "run"
    shutil.copytree(trained_run, path)
    prune_run(path, PruneSchedule(0.8, rounds=2, finetune_epochs=1))
    return path


@pytest.fixture
def pruned_copy(pruned_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(pruned_run, dest)
    return dest


def assert_exact_sparsity(run: Run, version: int, target: float) -> None:
    """Every pruned tensor has exactly round(target * n) zeros, where its mask says."""
    sparse = sparse_state(run, version)
    state = run.load_state(version)
    assert sparse is not None
    for name, keep in sparse.masks.items():
        assert int((~keep).sum()) == round(target * keep.numel()), name
        assert torch.all(state[name][~keep] == 0), name


def test_schedule_ends_exactly_at_the_sparsity():
    s = PruneSchedule(0.95, rounds=3).sparsities()
    assert s[-1] == 0.95 and s == sorted(s) and s[0] == pytest.approx(1 - 0.05 ** (1 / 3))


def test_magnitude_masks_prune_the_smallest_and_only_shrink():
    w = {"w": torch.tensor([[0.5, -0.1, 0.3], [-2.0, 0.05, 1.0]])}
    first = magnitude_masks(w, {"w": 2})
    assert first["w"].tolist() == [[True, False, True], [True, False, True]]
    w2 = {"w": torch.tensor([[0.01, 9.0, 0.3], [-2.0, 9.0, 1.0]])}  # pruned ones now large
    second = magnitude_masks(w2, {"w": 3}, first)
    assert not (second["w"] & ~first["w"]).any()  # nothing pruned comes back
    assert int((~second["w"]).sum()) == 3 and not second["w"][0, 0]


def test_masks_are_bit_packed_and_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    masks = {
        "a.weight": torch.rand(120, 400, generator=gen) > 0.8,
        "b.weight": torch.ones(3, 3) > 0,
    }
    write_masks(tmp_path / "m.safetensors", masks, {"sparsity": 0.8})
    back, meta = read_masks(tmp_path / "m.safetensors")
    assert meta == {"sparsity": 0.8}
    assert all(torch.equal(back[n], masks[n]) for n in masks)
    assert (tmp_path / "m.safetensors").stat().st_size < 120 * 400 / 8 + 1024


def test_prune_reaches_the_sparsity_and_masks_hold_through_fine_tuning(pruned_run):
    run = Run.open(pruned_run)
    receipt = run.receipt(1)
    assert receipt["kind"] == "prune" and receipt["parent"] == 0
    assert [r["finetune_steps"] > 0 for r in receipt["rounds"]] == [True, True]
    assert_exact_sparsity(run, 1, 0.8)
    assert set(sparse_state(run, 1).masks) == set(prunable(run.new_model()))
    # biases are untouched by pruning
    assert all(torch.count_nonzero(v) > 0 for k, v in run.load_state(1).items() if "bias" in k)


def test_forgetting_on_a_sparse_version_keeps_its_mask(pruned_copy):
    result = forget_run(pruned_copy, ForgetConfig("partial-amnesiac"), ForgetRequest(ids=(1, 2, 3)))
    run = Run.open(pruned_copy)
    assert result["steps"]["subtracted"]  # the training store still applies
    assert result["details"]["sparse"]["mask_changed"] == 0
    assert_exact_sparsity(run, result["version"], 0.8)
    before, after = sparse_state(run, 1).masks, sparse_state(run, result["version"]).masks
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_unprune_with_zero_rounds_equals_the_plain_method(pruned_copy):
    plain = forget_run(
        pruned_copy, ForgetConfig("label-flip", {"epochs": 1, "stop": "budget"}, seed=3), CLASS3
    )
    zero = forget_run(
        pruned_copy,
        ForgetConfig(
            "label-flip",
            {"epochs": 1, "stop": "budget"},
            from_version=1,
            seed=3,
            unprune=UnpruneParams(rounds=0),
        ),
        CLASS3,
    )
    assert plain["model_hash_after"] == zero["model_hash_after"]


def test_unprune_regrows_and_re_prunes_to_the_same_sparsity(pruned_copy):
    result = forget_run(
        pruned_copy,
        ForgetConfig(
            "label-flip", {"epochs": 1, "stop": "budget"}, unprune=UnpruneParams(0.5, rounds=2)
        ),
        CLASS3,
    )
    sparse = result["details"]["sparse"]
    assert sparse["unprune"]["rounds"] == 2 and len(sparse["unprune"]["regrown"]) == 2
    assert all(n > 0 for n in sparse["unprune"]["regrown"][0].values())
    assert sparse["mask_changed"] > 0
    assert len(result["details"]["rounds"]) == 2
    assert result["unprune"] == {"grow": 0.5, "rounds": 2}
    assert_exact_sparsity(Run.open(pruned_copy), result["version"], 0.8)


def test_retrain_on_a_sparse_version_re_prunes_with_the_same_schedule(pruned_copy):
    result = forget_run(
        pruned_copy, ForgetConfig("retrain", {"epochs": 1}), ForgetRequest(ids=(1, 2, 3))
    )
    rounds = result["details"]["reprune"]["rounds"]
    assert [r["sparsity"] for r in rounds] == pytest.approx(PruneSchedule(0.8, 2).sparsities())
    assert_exact_sparsity(Run.open(pruned_copy), result["version"], 0.8)


def test_mask_overlap_of_a_model_with_itself_is_one(pruned_run, cli):
    masks = sparse_state(Run.open(pruned_run), 1).masks
    overlap = mask_overlap(masks, masks)
    assert overlap["overall"] == 1.0 and set(overlap["layers"].values()) == {1.0}
    other = {n: ~m for n, m in masks.items()}
    assert mask_overlap(masks, other)["overall"] == 0.0
    res = cli("eval", pruned_run, "--version", "1", "--reference", "1", "--class", "3", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["mask_overlap"]["overall"] == 1.0
    assert doc["sparsity"]["version"]["overall"] == pytest.approx(0.8, abs=1e-6)


def test_eval_of_a_dense_version_has_no_sparsity(trained_run, cli):
    res = cli("eval", trained_run, "--version", "0", "--class", "3", "--json")
    doc = json.loads(res.out)
    assert doc["sparsity"] == {"version": None, "reference": None}
    assert doc["mask_overlap"] is None


def test_prune_command_and_its_errors(run_copy, cli):
    res = cli("prune", run_copy, "--sparsity", "1.0")
    assert res.code == 1 and "sparsity" in res.err
    res = cli("prune", run_copy, "--sparsity", "0.5", "--rounds", "1", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["version"] == 1 and doc["sparsity"]["overall"] == pytest.approx(0.5, abs=1e-3)
    res = cli("prune", run_copy, "--sparsity", "0.9")
    assert res.code == 1 and "already pruned" in res.err and "--from 0" in res.err
    res = cli("forget", run_copy, "-m", "retrain", "--ids", "4", "--unprune")
    assert res.code == 1 and "does not apply to retrain" in res.err
    res = cli("forget", run_copy, "-m", "amnesiac", "--ids", "4", "--unprune", "-p", "grow=2")
    assert res.code == 1 and "grow" in res.err
    res = cli("forget", run_copy, "-m", "amnesiac", "--ids", "4", "--unprune", "--from", "0")
    assert res.code == 1 and "version 0 is dense" in res.err
    assert Run.open(run_copy).versions() == [0, 1]
