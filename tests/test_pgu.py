"""Projected-gradient unlearning: the covariance math, its storage, and the method."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_cli.basis import Basis, project_off, subtract
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.input_covariance import (
    input_covariance,
    layer_inputs,
    shifted_conv_products,
    shifts_pay,
)
from unlearn_cli.ledger import ledger_state
from unlearn_cli.lineage import find_covariance
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.ops.forget import ForgetConfig, apply, forget_run, prepare
from unlearn_cli.progress import NullProgress
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store.covariance import COVARIANCE_NAME, read_covariance

SAMPLES = ForgetRequest(ids=tuple(range(0, 40, 2)))
FAST = {"epochs": 2, "stop": "budget"}


def test_projected_gradient_is_orthogonal_to_the_kept_subspace():
    gen = torch.Generator().manual_seed(0)
    for shape in ((16, 150), (16, 6, 5, 5)):
        d = int(np.prod(shape[1:]))
        basis = Basis.from_covariance(
            (lambda a: a @ a.T)(torch.randn(d, d, generator=gen, dtype=torch.float64))
        )
        u = basis.vectors[:, : basis.kept(0.95)].float()
        g = torch.randn(*shape, generator=gen)
        projected = project_off(g, u)
        assert projected.shape == g.shape
        residual = projected.reshape(shape[0], -1) @ u
        assert residual.abs().max() < 1e-4 * g.abs().max()
        # and nothing outside the subspace is lost
        outside = g.reshape(shape[0], -1) - (g.reshape(shape[0], -1) @ u) @ u.T
        torch.testing.assert_close(projected.reshape(shape[0], -1), outside)


def test_conv_inputs_are_the_patches_the_weight_multiplies():
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2, bias=False)
    x = torch.randn(2, 3, 9, 9)
    rows = layer_inputs(conv, x)  # (B*L, 27)
    out = conv(x).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(rows @ conv.weight.reshape(4, -1).T, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "padding", "dilation"),
    [
        (3, (9, 11), 3, 1, 1),  # "same", a non-square image
        (2, (8, 8), 5, 2, 1),
        (4, (10, 7), 3, 0, 1),  # no padding: wide edges
        (3, (12, 12), 3, 2, 2),  # dilated
        (2, (9, 9), (3, 5), (1, 2), 1),  # a non-square kernel
        (5, (6, 6), 3, 3, 1),  # padding past the kernel: windows of zeros only
        (2, (3, 5), 3, 0, 1),  # an image barely larger than the kernel
        (2, (2, 9), 3, 1, (1, 2)),  # edges that overlap
        (3, (7, 7), 1, 0, 1),  # 1x1: no shifts at all
    ],
)
def test_shifted_conv_products_equal_the_unfolded_patches(
    channels, size, kernel, padding, dilation
):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 4, kernel, padding=padding, dilation=dilation)
    x = torch.randn(3, channels, *size, dtype=torch.float64)
    rows = layer_inputs(conv, x)
    direct = rows.T @ rows
    shifted = shifted_conv_products(conv, x, torch.float64)
    assert shifted.dtype == torch.float64 and shifted.shape == direct.shape
    assert (shifted - direct).abs().max() <= 1e-12 * direct.abs().max()


def test_shifted_products_run_where_they_pay_and_give_the_unfolds_covariance(monkeypatch):
    import unlearn_cli.input_covariance as ic

    wide = torch.zeros(64, 32, 28, 28)
    assert shifts_pay(nn.Conv2d(32, 8, 3, padding=1), wide)
    assert not shifts_pay(nn.Conv2d(32, 8, 3, padding=1, stride=2), wide)  # strided
    assert not shifts_pay(nn.Conv2d(8, 8, 3, padding=1), torch.zeros(64, 8, 28, 28))  # narrow
    assert not shifts_pay(nn.Conv2d(32, 8, 3, padding=1), torch.zeros(64, 32, 3, 3))  # tiny
    assert not shifts_pay(nn.Conv2d(32, 8, 3, padding=1), wide[:2])  # per-batch work dominates
    assert not shifts_pay(nn.Linear(32, 8), torch.zeros(8, 32))
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1, stride=2), nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    ).double()  # fmt: skip
    x = torch.randn(6, 1, 16, 16, dtype=torch.float64)
    calls = []
    # every layer the shifted products apply to takes them, whatever they cost here
    monkeypatch.setattr(
        ic, "shifts_pay", lambda m, x: ic.ConvGeometry.of(m) is not None and x.shape[1] >= 32
    )
    monkeypatch.setattr(
        ic, "shifted_conv_products", lambda *a: calls.append(1) or shifted_conv_products(*a)
    )
    fast = input_covariance(model, x, batch_size=4)
    fast32 = input_covariance(model.float(), x.float(), batch_size=4, precision=torch.float32)
    assert len(calls) == 4  # the second conv, in both batches, in both precisions
    monkeypatch.setattr(ic, "shifts_pay", lambda *a: False)
    unfolded = input_covariance(model.double(), x, batch_size=4)
    for name, c in unfolded.items():
        assert (fast[name] - c).abs().max() <= 1e-12 * c.abs().max(), name
        assert (fast32[name] - c).abs().max() <= 1e-5 * c.abs().max(), name


def test_subtracting_the_forget_covariance_equals_the_retained_covariance():
    torch.manual_seed(0)
    # float64 end to end, so batch composition cannot change the activations
    model = create_model("lenet", ModelSpec(1, 8, 10)).double()
    x = torch.randn(60, 1, 8, 8, dtype=torch.float64)
    forget, retain = torch.arange(0, 60, 3), torch.tensor([i for i in range(60) if i % 3])
    everything = {n: Basis.from_covariance(c) for n, c in input_covariance(model, x).items()}
    after = subtract(everything, input_covariance(model, x[forget], batch_size=7))
    direct = input_covariance(model, x[retain], batch_size=11)
    for name, c in direct.items():
        scale = c.abs().max()
        assert (after[name].covariance() - c).abs().max() <= 1e-10 * scale, name


def test_float32_products_stay_close_to_float64_and_keep_the_same_directions(monkeypatch):
    import unlearn_cli.input_covariance as ic

    torch.manual_seed(0)
    model = create_model("lenet", ModelSpec(1, 12, 10))
    # raw-pixel-like inputs: many equal background values, the hardest sums for float32
    x = (torch.rand(64, 1, 12, 12) > 0.7).float() - 0.42
    monkeypatch.setattr(ic, "CHUNK_ROWS", 500)  # several chunks per batch
    exact = input_covariance(model, x, batch_size=16)
    fast = input_covariance(model, x, batch_size=16, precision=torch.float32)
    for name, c in exact.items():
        assert fast[name].dtype == torch.float64  # summed in float64 either way
        assert (fast[name] - c).abs().max() <= 1e-5 * c.abs().max(), name
        assert not torch.equal(fast[name], c)  # the products did run in float32
        assert Basis.from_covariance(fast[name]).kept(0.95) == Basis.from_covariance(c).kept(0.95)
    # a float64 model keeps float64 products whatever is asked
    model64 = model.double()
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            input_covariance(model64, x.double(), precision=torch.float32).values(),
            input_covariance(model64, x.double()).values(),
            strict=True,
        )
    )


def test_basis_keeps_directions_by_cumulative_singular_value_share():
    basis = Basis(torch.eye(4, dtype=torch.float64), torch.tensor([4.0, 3.0, 2.0, 1.0]).double())
    assert [basis.kept(g) for g in (0.0, 0.4, 0.69, 0.7, 0.95, 1.0)] == [0, 1, 1, 2, 3, 4]


def test_train_stores_the_covariance_of_every_training_sample(trained_run):
    run = Run.open(trained_run)
    state = read_covariance(run.path / COVARIANCE_NAME)
    assert state.samples == run.meta["dataset"]["n_train"] and state.computed_on == 0
    assert list(state.bases) == ["0.0", "0.3", "1", "3", "5"]
    assert state.bases["0.3"].vectors.shape == (150, 150)
    assert state.excluded_ids.size == 0


def test_pgu_leaves_biases_and_batchnorm_alone(run_copy):
    result = forget_run(run_copy, ForgetConfig("pgu", FAST), SAMPLES)
    run = Run.open(run_copy)
    before, after = run.load_state(0), run.load_state(result["version"])
    for name in before:
        if name.endswith("bias"):
            assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in before if n.endswith("weight"))
    layers = result["details"]["layers"]
    assert all(0 < layer["kept"] <= layer["dim"] for layer in layers)


def small_bn_net(spec: ModelSpec) -> nn.Module:
    """A conv net with BatchNorm, small enough to train and measure in a second."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(spec.channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(8 * spec.image_size**2, spec.num_classes),
    )


def test_pgu_freezes_batchnorm_statistics(tmp_path):
    from unlearn_cli.ops.train import RecordConfig, train_run
    from unlearn_cli.train_config import TrainConfig

    path = tmp_path / "bn"
    train_run(  # a user model (module:callable) with BatchNorm; the test module is importable
        TrainConfig(model=f"{__name__}:small_bn_net", epochs=1, batch_size=64),
        RecordConfig(enabled=False),
        path,
        covariance=True,
    )
    result = forget_run(path, ForgetConfig("pgu", {"epochs": 1, "stop": "budget"}), SAMPLES)
    run = Run.open(path)
    before, after = run.load_state(0), run.load_state(result["version"])
    bn = [n for n in before if "running" in n or n.startswith("0.1.")]
    assert bn and all(torch.equal(before[n], after[n]) for n in bn)


def _poisoned(load, forgotten: np.ndarray):
    """The dataset with every retained training image replaced by NaN."""
    data = load()
    x = torch.full_like(data.x_train, float("nan"))
    idx = torch.from_numpy(forgotten)
    x[idx] = data.x_train[idx]
    return dataclasses.replace(data, x_train=x)


def test_pgu_works_with_retained_data_withheld(trained_run, tmp_path):
    import shutil

    hashes = []
    for withheld in (False, True):
        path = tmp_path / f"run-{withheld}"
        shutil.copytree(trained_run, path)
        prep = prepare(path, ForgetConfig("pgu", FAST), SAMPLES)
        if withheld:
            poisoned = functools.cache(lambda p=prep: _poisoned(p.load_data, p.new_ids))
            prep = dataclasses.replace(prep, load_data=poisoned)
        with prep.run.lock():
            receipt = apply(prep, NullProgress())
        hashes.append(receipt["model_hash_after"])
        state = Run.open(path).load_state(receipt["version"])
        assert all(torch.isfinite(v).all() for v in state.values())
    assert hashes[0] == hashes[1]


def test_sequential_requests_update_the_stored_statistics(run_copy):
    run = Run.open(run_copy)
    first = forget_run(run_copy, ForgetConfig("pgu", FAST), ForgetRequest(ids=(1, 2, 3)))
    second = forget_run(run_copy, ForgetConfig("pgu", FAST), ForgetRequest(ids=(4, 5)))
    s0 = read_covariance(run.path / COVARIANCE_NAME)
    s1 = read_covariance(run.version_dir(first["version"]) / "covariance.zarr")
    s2 = read_covariance(run.version_dir(second["version"]) / "covariance.zarr")
    assert (s0.samples - s1.samples, s1.samples - s2.samples) == (3, 2)
    assert s2.excluded_ids.tolist() == [1, 2, 3, 4, 5]
    # version 2 = version 1's statistics minus ids 4, 5 measured on version 1's model
    data = run.load_dataset()
    c45 = input_covariance(run.load_model(first["version"]), data.x_train[[4, 5]])
    expected = subtract(s1.bases, c45)
    for name, basis in s2.bases.items():
        c = expected[name].covariance()
        assert (basis.covariance() - c).abs().max() <= 1e-5 * c.abs().max()
    assert second["details"]["subtracted_samples"] == 2
    # a request from version 0 starts from the run's statistics again
    path, state = find_covariance(run, 0)
    assert path == run.path / COVARIANCE_NAME and state.excluded_ids.size == 0


def test_ids_forgotten_by_another_method_are_subtracted_too(run_copy):
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(1, 2, 3)))
    result = forget_run(run_copy, ForgetConfig("pgu", FAST), ForgetRequest(ids=(4, 5)))
    assert result["details"]["subtracted_samples"] == 5
    run = Run.open(run_copy)
    state = read_covariance(run.version_dir(result["version"]) / "covariance.zarr")
    assert state.excluded_ids.tolist() == [1, 2, 3, 4, 5]


def test_class_request_stops_when_the_retained_proxy_drops(run_copy):
    pairs = {"lr": 5, "lr_end": 5, "check_every": 1, "forget_target": 0, "max_retain_drop": 0}
    result = forget_run(
        run_copy, ForgetConfig("pgu", {**pairs, "epochs": 5}), ForgetRequest(classes=("3",))
    )
    stopping = result["details"]["stopping"]
    assert stopping["request"] == "class"
    assert stopping["reason"].startswith("held-out accuracy dropped")


def test_covariance_command_measures_a_later_version(run_copy, cli):
    forget_run(run_copy, ForgetConfig("amnesiac"), ForgetRequest(ids=(1, 2, 3)))
    res = cli("covariance", run_copy, "--json")
    assert res.code == 1 and "already has layer covariances" in res.err and "--force" in res.err
    res = cli("covariance", run_copy, "--force", "--dtype", "float64", "--json")
    assert res.code == 0, res.err
    run = Run.open(run_copy)
    state = read_covariance(run.path / COVARIANCE_NAME)
    assert state.computed_on == 1 and state.excluded_ids.tolist() == [1, 2, 3]
    assert state.samples == run.meta["dataset"]["n_train"] - 3 and state.dtype == "float64"
    # version 0 does not descend from version 1: pgu from it is refused, with the fix
    res = cli("forget", run_copy, "-m", "pgu", "--ids", "7", "--from", "0")
    assert res.code == 1 and "does not descend" in res.err and "--version 0" in res.err


def test_pgu_without_covariances_says_how_to_get_them(run_copy, cli):
    import shutil

    shutil.rmtree(run_copy / "covariance.zarr")
    before = sorted(p.name for p in (run_copy / "versions").iterdir())
    res = cli("forget", run_copy, "-m", "pgu", "--ids", "7")
    assert res.code == 1
    assert "no layer covariances" in res.err and "unlearn covariance RUN" in res.err
    assert sorted(p.name for p in (run_copy / "versions").iterdir()) == before


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("layer_gamma=9.9:0.9", "does not project"),
        ("layer_gamma=0.0:2", "layer:gamma"),
        ("gamma=1.5", "gamma"),
    ],
)
def test_bad_pgu_parameters_are_refused(run_copy, cli, pair, message):
    res = cli("forget", run_copy, "-m", "pgu", "--ids", "7", "-p", pair)
    assert res.code == 1 and message in res.err
    assert ledger_state(run_copy / "versions" / "0000").requests == 0
    assert sorted(p.name for p in (run_copy / "versions").iterdir()) == ["0000"]


def test_bad_covariance_options_are_refused(run_copy, cli):
    res = cli("covariance", run_copy, "--force", "--dtype", "float8")
    assert res.code == 1 and "dtype" in res.err
    res = cli("covariance", run_copy, "--force", "--version", "9")
    assert res.code == 1 and "no version 9" in res.err


def test_layer_gamma_is_checked_before_data_or_covariances_load(run_copy, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the parameters were checked")

    monkeypatch.setattr(Run, "load_dataset", no_data)
    (run_copy / COVARIANCE_NAME).rename(run_copy / "moved-away")
    with pytest.raises(InvalidParameterError, match="names layer 'nope'"):
        prepare(run_copy, ForgetConfig("pgu", {"layer_gamma": "nope:0.9"}), SAMPLES)
